"""Optional compiled modules: used only when built from exactly the source next to them.

``scripts/build-compiled`` compiles a few hot modules of a package with mypyc (the same source
files, no second implementation) into the package's ``_compiled/`` folder, with a manifest of
the SHA-256 of each source it compiled and the interpreter it compiled for. The package's
``__init__`` calls :func:`prefer_compiled`, which puts that folder first on the package's
``__path__`` when, and only when,

* the manifest names this interpreter (``sys.implementation.cache_tag``),
* every compiled module's source is byte for byte the one compiled, and so is every source of
  ours it imports, directly or not (an edited ``.py`` is never shadowed by a stale build, nor
  called by compiled code that assumed its old types), and
* ``HYPOXIA_PURE_PYTHON`` is not set (benchmarks and tests compare both paths side by side).

Otherwise the package is plain Python, as after ``pip install -e .``: the compiled path is an
option, never a requirement.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

FOLDER = "_compiled"
MANIFEST = "manifest.json"
PURE_ENV = "HYPOXIA_PURE_PYTHON"


def source_digest(path: Path) -> str:
    """SHA-256 of a source file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_folder(package_dir: Path) -> Path | None:
    """The package's compiled folder if it may be used now (see the module docstring)."""
    if os.environ.get(PURE_ENV):
        return None
    folder = package_dir / FOLDER
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("cache_tag") != sys.implementation.cache_tag:
        return None
    modules = manifest.get("modules")
    if not isinstance(modules, dict) or not modules:
        return None
    for name, digest in modules.items():
        source = package_dir / f"{name}.py"
        if not source.is_file() or source_digest(source) != digest:
            return None
    if not _depends_unchanged(package_dir, manifest):
        return None
    for name in manifest.get("shared") or []:
        if not any(folder.glob(f"{name}.*")):
            return None
    return folder


def _depends_unchanged(package_dir: Path, manifest: dict[str, object]) -> bool:
    """Whether every source the compiled modules import is the one they were compiled against.

    ``depends`` maps paths from the root (``depth`` folders above the package) to SHA-256:
    compiled code relies on the types it saw there.
    """
    depends = manifest.get("depends") or {}
    depth = manifest.get("depth", 1)
    if not isinstance(depends, dict) or not isinstance(depth, int) or depth < 1:
        return False
    root = package_dir.parents[depth - 1]
    for rel, digest in depends.items():
        source = root / rel
        if not source.is_file() or source_digest(source) != digest:
            return False
    return True


def prefer_compiled(package_path: list[str]) -> bool:
    """Put the package's compiled folder first on its ``__path__`` if it may be used.

    A build of several modules also has one shared library, a top-level module named by a hash
    (``<hash>__mypyc``): the folder then goes at the end of ``sys.path`` too, where it shadows
    nothing.

    Args:
        package_path: The calling package's ``__path__`` (changed in place).

    Returns:
        Whether the compiled modules will be imported.
    """
    folder = compiled_folder(Path(package_path[0]))
    if folder is None:
        return False
    package_path.insert(0, str(folder))
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("shared") and str(folder) not in sys.path:
        sys.path.append(str(folder))
    return True
