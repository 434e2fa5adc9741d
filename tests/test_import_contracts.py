"""The import contracts of pyproject.toml hold, and a deliberate violation breaks them.

``lint-imports`` (import-linter) reads ``[tool.importlinter]``; scripts/test runs it too. The
second test copies the packages to a scratch folder, makes the control core import a driver, and
checks that the contract guarding the core reports exactly that import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "common",
    "telemetry",
    "drivers",
    "controller",
    "recorder",
    "records",
    "simulators",
    "hypoxia",
)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [exe, "--no-cache"],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_a_driver_breaks_the_core_contract(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    loops = tmp_path / "controller/core/loops.py"
    loops.write_text(loops.read_text() + "\nimport drivers.reading  # deliberate violation\n")

    result = _lint_imports(tmp_path)

    assert result.returncode != 0
    assert "the control core is pure: no service, no drivers, no I/O libraries BROKEN" in (
        result.stdout
    )
    assert "controller.core.loops -> drivers.reading" in result.stdout
    assert "1 broken" in result.stdout
