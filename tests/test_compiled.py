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
import simulators
from buildtools import backend, compile_core
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


def test_an_edited_source_the_compiled_modules_import_means_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    pkg = _package(tmp_path)
    (pkg / "types.py").write_text("class Reading:\n    value: float\n")
    manifest = json.loads((pkg / FOLDER / MANIFEST).read_text())
    manifest["depth"] = 1  # paths from the folder holding the package
    manifest["depends"] = {"pkg/types.py": source_digest(pkg / "types.py")}
    (pkg / FOLDER / MANIFEST).write_text(json.dumps(manifest))
    assert compiled_folder(pkg) == pkg / FOLDER
    (pkg / "types.py").write_text("class Reading:\n    value: float | None\n")
    assert compiled_folder(pkg) is None  # compiled code assumed the old types
    (pkg / "types.py").unlink()
    assert compiled_folder(pkg) is None


def test_the_build_records_every_source_of_ours_the_compiled_modules_import() -> None:
    found = compile_core.imported_sources(compile_core.ROOT, ["simulators.plant"])
    assert "simulators/vessel.py" in found  # directly
    assert "controller/core/pericellular.py" in found  # through vessel.py
    assert "controller/core/gas_liquid.py" in found  # `from controller.core import gas_liquid`
    assert "simulators/plant.py" not in found  # itself: in "modules"
    assert not any(p.startswith(("pydantic", "math")) for p in found)


def test_the_environment_switch_forces_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _package(tmp_path)
    monkeypatch.setenv(PURE_ENV, "1")
    assert compiled_folder(pkg) is None


TWIN_DIGEST = """
import dataclasses, hashlib, json
from pathlib import Path
import controller.core, simulators
from controller.service.recipe_source import RecipeSource
from simulators.twin import DoorOpening, run_twin
from simulators.vessel import load_vessel
h = hashlib.sha256()
for vessel, doors in (("workstation-100l", [DoorOpening(600.0, 40.0)]), ("bioreactor-2l", [])):
    recipe = RecipeSource.from_file(Path("examples/recipes/short-demo.toml")).recipe
    r = run_twin(recipe, load_vessel(vessel), seed=5, doors=doors)
    h.update(repr(r.rows).encode() + repr(r.events).encode())
    for f in dataclasses.fields(r.trace):
        h.update(repr(getattr(r.trace, f.name)).encode())
print(json.dumps({"compiled": [controller.core.COMPILED, simulators.COMPILED],
                  "digest": h.hexdigest()}))
"""


@pytest.mark.skipif(
    not (controller.core.COMPILED and simulators.COMPILED),
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
    assert runs[False]["compiled"] == [True, True]
    assert runs[True]["compiled"] == [False, False]
    assert runs[False]["digest"] == runs[True]["digest"]


def _tree_copy(tmp_path: Path) -> Path:
    """What a build reads of the repository, copied (a build writes into the tree it is given)."""
    root = tmp_path / "tree"
    root.mkdir()
    compile_core.copy_sources(root)
    return root


def test_the_build_compiles_a_unit_whose_manifest_then_admits_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    root = _tree_copy(tmp_path)
    unit = compile_core.Unit("controller.core", ("numeric",))
    folder = compile_core.build_unit(unit, root)
    assert folder == root / "controller" / "core" / FOLDER
    assert any(folder.glob("numeric.*.so"))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["modules"] == {"numeric": source_digest(root / "controller/core/numeric.py")}
    assert compiled_folder(root / "controller" / "core") == folder
    done = subprocess.run(
        [sys.executable, "-c", "import controller.core.numeric as m; print(m.__file__)"],
        cwd=root,
        env={**{k: v for k, v in os.environ.items() if k != PURE_ENV}, "PYTHONPATH": str(root)},
        check=True,
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip().endswith(".so")
    assert Path(done.stdout.strip()).parent == folder


def test_a_machine_without_a_c_compiler_gets_an_error_naming_the_package_and_no_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree_copy(tmp_path)
    monkeypatch.setenv("CC", "/bin/false")  # setuptools' compiler, as mypyc calls it
    with pytest.raises(compile_core.BuildError, match=r"mypyc failed for controller\.core"):
        compile_core.build_unit(compile_core.Unit("controller.core", ("numeric",)), root)
    assert not (root / "controller" / "core" / FOLDER / MANIFEST).exists()


def test_the_backend_installs_pure_python_with_a_warning_when_the_build_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PURE_ENV, raising=False)
    cleaned: list[bool] = []

    def fail() -> list[str]:
        raise compile_core.BuildError("mypyc failed for controller.core:\nerror: no cc")

    monkeypatch.setattr(compile_core, "build_all", fail)
    monkeypatch.setattr(compile_core, "clean", lambda root=compile_core.ROOT: cleaned.append(True))
    backend._compile()
    err = capsys.readouterr().err
    assert "warning: the compiled twin core was not built" in err
    assert "no cc" in err
    assert cleaned == [True]
    assert "mypy>=2.4,<3" in backend.get_requires_for_build_editable()

    monkeypatch.setenv(PURE_ENV, "1")  # no build and no build requirements
    backend._compile()
    assert "not built" in capsys.readouterr().err
    assert not any(r.startswith("mypy") for r in backend.get_requires_for_build_wheel())
