"""The optional compiled modules (scripts/build-compiled): used only when built from exactly the
sources next to them, and then the twin's results are bit for bit the pure-Python ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import controller.core
from common.compiled import (
    FOLDER,
    MANIFEST,
    PURE_ENV,
    compiled_folder,
    prefer_compiled,
    source_digest,
)

ROOT = Path(__file__).resolve().parent.parent


def _package(tmp_path: Path, shared: list[str] | None = None) -> Path:
    """A package folder with one module and a manifest that matches it."""
    pkg = tmp_path / "pkg"
    (pkg / FOLDER).mkdir(parents=True)
    (pkg / "hot.py").write_text("X = 1\n")
    manifest = {
        "cache_tag": sys.implementation.cache_tag,
        "modules": {"hot": source_digest(pkg / "hot.py")},
        "shared": shared or [],
    }
    (pkg / FOLDER / MANIFEST).write_text(json.dumps(manifest))
    return pkg


def test_a_build_of_the_current_sources_goes_first_on_the_package_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    pkg = _package(tmp_path)
    path = [str(pkg)]
    assert prefer_compiled(path)
    assert path == [str(pkg / FOLDER), str(pkg)]


def test_an_edited_source_a_missing_library_or_another_python_means_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    pkg = _package(tmp_path)
    assert compiled_folder(pkg) == pkg / FOLDER
    (pkg / "hot.py").write_text("X = 2\n")  # edited after the build: never shadowed
    assert compiled_folder(pkg) is None
    path = [str(pkg)]
    assert not prefer_compiled(path)
    assert path == [str(pkg)]

    other = _package(tmp_path / "b", shared=["abc__mypyc"])
    assert compiled_folder(other) is None  # the shared library is not there
    (other / FOLDER / "abc__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert compiled_folder(other) == other / FOLDER

    manifest = json.loads((other / FOLDER / MANIFEST).read_text())
    manifest["cache_tag"] = "cpython-27"
    (other / FOLDER / MANIFEST).write_text(json.dumps(manifest))
    assert compiled_folder(other) is None
    (other / FOLDER / MANIFEST).write_text("not json")
    assert compiled_folder(other) is None


def test_the_environment_switch_forces_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _package(tmp_path)
    monkeypatch.setenv(PURE_ENV, "1")
    assert compiled_folder(pkg) is None


TWIN_DIGEST = """
import hashlib, json
from pathlib import Path
import controller.core
from controller.service.recipe_source import RecipeSource
from simulators.twin import DoorOpening, run_twin
from simulators.vessel import load_vessel
recipe = RecipeSource.from_file(Path("examples/recipes/short-demo.toml")).recipe
r = run_twin(recipe, load_vessel("workstation-100l"), seed=5, doors=[DoorOpening(600.0, 40.0)])
h = hashlib.sha256(repr(r.rows).encode() + r.trace.o2_pct.tobytes())
print(json.dumps({"compiled": controller.core.COMPILED, "digest": h.hexdigest()}))
"""


@pytest.mark.skipif(
    not controller.core.COMPILED,
    reason="no compiled build in use (none built, stale, or HYPOXIA_PURE_PYTHON set)",
)
def test_compiled_and_pure_python_twins_agree_bit_for_bit() -> None:
    runs = {}
    for pure in (False, True):
        env = {k: v for k, v in os.environ.items() if k != PURE_ENV}
        if pure:
            env[PURE_ENV] = "1"
        done = subprocess.run(
            [sys.executable, "-c", TWIN_DIGEST],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        runs[pure] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs[False]["compiled"] is True
    assert runs[True]["compiled"] is False
    assert runs[False]["digest"] == runs[True]["digest"]
