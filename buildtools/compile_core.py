"""Compile the twin's hot modules with mypyc: the same sources, into each package's ``_compiled/``.

Used by the package's build backend (``buildtools/backend.py``: every ``pip install`` builds it
where a C compiler and the Python headers are present) and by ``scripts/build-compiled`` (rebuild
or remove by hand). The extension modules go into ``<package>/_compiled/`` with a manifest of
each source's SHA-256 and the interpreter's cache tag; ``common/compiled.py`` uses them only
while every source is byte for byte the one compiled, so an edited module is plain Python again
until the next build, and ``HYPOXIA_PURE_PYTHON=1`` ignores a build.

Only the standard library here: the backend imports this module before anything is installed.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # common/compiled.py (standard library only) names the layout
    sys.path.insert(0, str(ROOT))

from common.compiled import FOLDER, MANIFEST, source_digest  # noqa: E402


@dataclass(frozen=True)
class Unit:
    """One package's compiled modules (one mypyc invocation, one shared library)."""

    package: str
    """Dotted package name, e.g. ``controller.core``."""
    modules: tuple[str, ...]
    """Module names inside the package."""

    @property
    def folder(self) -> Path:
        """The package's folder relative to the repository root."""
        return Path(*self.package.split("."))


UNITS = (
    Unit(
        "controller.core",
        (
            "numeric",
            "observer",
            "loops",
            "gas",
            "thermal",
            "recipe_engine",
            "exposure",
            "gas_liquid",
            "medium_layer",
            "reactor",
        ),
    ),
    Unit("simulators", ("plant", "sensors", "twin")),
)
"""What is compiled: every module a twin period runs through, from the same sources the service
imports. ``controller.core``: the headspace observer (Kalman filters, purge fits), the loops and
their clip, the recipe engine and exposure clocks, the gas-liquid functions, the medium-layer
solver and ``ReactorController`` (kept subclassable by ``mypyc_attr``: bench/control_cases.py
records its commands from a Python subclass). ``simulators``: the plant, the sensor models and
the twin's loop. A module that defines a pydantic model cannot be compiled (mypyc makes no
native class of one), which is why the tunings live in ``loop_tuning``, ``observer_tuning``
and ``reactor_tuning``, the solver in ``medium_layer`` (the culture model stays in
``pericellular``). Measured by bench/twin.py (docs/performance.md, "Twin speed")."""


COPY = ("common", "controller", "simulators", "pyproject.toml")
"""What mypyc needs of the tree: the compiled modules and everything they import, and the mypy
configuration (strict, the pydantic plugin)."""

REQUIRES = ("mypy>=2.4,<3", "pydantic>=2.14,<3")
"""What a build needs besides a C compiler and the Python headers: mypyc ships with mypy, and
mypy must see the pydantic models the compiled modules import (same pins as pyproject.toml)."""


class BuildError(RuntimeError):
    """The compiled modules could not be built; the pure-Python modules stay in use."""


def copy_sources(work: Path, root: Path = ROOT) -> None:
    """Copy what a build reads (:data:`COPY`) from ``root`` into ``work``, without old builds."""
    for name in COPY:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", FOLDER))
        elif src.is_file():
            shutil.copy2(src, work / name)


def _module_file(root: Path, dotted: str) -> str | None:
    """The source of module ``dotted`` under ``root`` (path from ``root``), if it is ours."""
    base = Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def imported_sources(root: Path, modules: list[str]) -> list[str]:
    """Every source of ours the ``modules`` import, directly or not, except themselves.

    Ours: under one of the :data:`COPY` folders. A build records their digests (``depends``),
    since compiled code relies on the types it saw in them (common/compiled.py checks them).
    """
    ours = {name for name in COPY if (root / name).is_dir()}
    own = {f for m in modules if (f := _module_file(root, m)) is not None}
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        dotted = todo.pop()
        path = _module_file(root, dotted)
        if path is None or path in seen:
            continue
        seen.add(path)
        tree = ast.parse((root / path).read_text(), filename=path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] in ours]
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.level == 0
                and node.module.split(".")[0] in ours
            ):
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # submodules
    return sorted(seen - own)


def build_unit(unit: Unit, root: Path = ROOT) -> Path:
    """Compile one unit and install it with its manifest into ``root``; returns its folder.

    Raises:
        BuildError: mypyc failed or produced nothing, or a source changed during the build.
    """
    target = root / unit.folder / FOLDER
    with tempfile.TemporaryDirectory(prefix="hypoxia-mypyc-") as tmp:
        work = Path(tmp)
        copy_sources(work, root)
        sources = [str(unit.folder / f"{m}.py") for m in unit.modules]
        try:
            done = subprocess.run(  # noqa: S603 - this interpreter's mypyc on our own files
                [sys.executable, "-m", "mypyc", *sources],
                check=False,
                cwd=work,
                capture_output=True,
                text=True,
            )
        except OSError as exc:
            raise BuildError(f"mypyc could not start: {exc}") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise BuildError(f"mypyc failed for {unit.package}:\n{tail}")
        built = sorted((work / unit.folder).glob("*.so"))
        # with several modules mypyc adds one shared library, a top-level module named by hash
        shared = sorted(work.glob("*__mypyc*.so"))
        if not built:
            raise BuildError(f"mypyc produced no extension module for {unit.package}")
        digests = {m: source_digest(work / unit.folder / f"{m}.py") for m in unit.modules}
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for lib in [*built, *shared]:
            shutil.copy2(lib, target / lib.name)
        depends = {
            path: source_digest(work / path)
            for path in imported_sources(work, [f"{unit.package}.{m}" for m in unit.modules])
        }
        manifest = {
            "cache_tag": sys.implementation.cache_tag,
            "python": sys.version.split()[0],
            "modules": digests,
            "depth": len(unit.package.split(".")),
            "depends": depends,
            "shared": [lib.name.split(".")[0] for lib in shared],
        }
        (target / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    for m in unit.modules:  # the copy compiled must be the file in the tree
        if source_digest(root / unit.folder / f"{m}.py") != digests[m]:
            shutil.rmtree(target, ignore_errors=True)
            raise BuildError(f"{unit.package}.{m} changed during the build; rebuild")
    return target


def build_all(root: Path = ROOT) -> list[str]:
    """Compile every unit; returns one line per unit built.

    Raises:
        BuildError: as :func:`build_unit`; units built before stay (each has its own manifest).
    """
    return [
        f"compiled {', '.join(u.modules)} into {build_unit(u, root).relative_to(root)}"
        for u in UNITS
    ]


def clean(root: Path = ROOT) -> None:
    """Remove every unit's compiled folder (pure Python from then on)."""
    for unit in UNITS:
        shutil.rmtree(root / unit.folder / FOLDER, ignore_errors=True)
