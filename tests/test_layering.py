"""Layering (ophyd-async style): runtime code never imports simulators, the CLI, benchmarks or
test helpers; drivers know nothing of control.

An AST check that needs no tool, beside the finer import-linter contracts of pyproject.toml
(tests/test_import_contracts.py); it also covers bench/, which is not a package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_FORBIDDEN = {"simulators", "tests", "hypoxia", "bench", "records"}
FORBIDDEN = {
    "common": RUNTIME_FORBIDDEN | {"telemetry", "drivers", "controller", "recorder"},
    "telemetry": RUNTIME_FORBIDDEN | {"drivers", "controller", "recorder"},
    "controller": RUNTIME_FORBIDDEN | {"recorder"},
    "drivers": RUNTIME_FORBIDDEN | {"controller", "telemetry", "recorder"},
    "recorder": RUNTIME_FORBIDDEN | {"controller", "drivers"},
    "simulators": {"tests", "hypoxia", "bench", "records"},
    "records": {"tests", "hypoxia", "bench"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & FORBIDDEN[package]
    }
    assert offenders == {}
