"""The package's build backend: setuptools, plus the optional compiled twin core.

``pip install .`` and ``pip install -e .`` call this backend (``[build-system]`` in
pyproject.toml). It is setuptools' own backend with one step before each wheel: the hot modules
of ``buildtools/compile_core.py`` are compiled with mypyc into their package's ``_compiled/``
folder (in the source tree, which an editable install imports from, and hence in a regular
wheel too, as package data). A machine without a C compiler or the Python headers gets a
warning and the pure-Python package, never a failed install: the compiled modules are the same
sources, an option for speed (docs/performance.md, "Twin speed").

``HYPOXIA_PURE_PYTHON=1`` at install time skips the build (and its build requirements).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # the steps this backend leaves to setuptools unchanged
    build_sdist,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from buildtools import compile_core
from common.compiled import PURE_ENV

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

ConfigSettings = dict[str, Any] | None


def _wanted() -> bool:
    return not os.environ.get(PURE_ENV)


def _compile() -> None:
    """Build the compiled modules, or say why not and go on in pure Python."""
    if not _wanted():
        print(f"hypoxia: {PURE_ENV} set; compiled twin core not built", file=sys.stderr)
        return
    try:
        for line in compile_core.build_all():
            print(f"hypoxia: {line}", file=sys.stderr)
    except (compile_core.BuildError, OSError) as exc:
        compile_core.clean()
        print(
            "hypoxia: warning: the compiled twin core was not built; the pure-Python modules "
            f"are used (same results, about half the twin's speed): {exc}",
            file=sys.stderr,
        )


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    """Setuptools' requirements, plus mypy and pydantic for the compiled core."""
    extra = list(compile_core.REQUIRES) if _wanted() else []
    return [*_setuptools.get_requires_for_build_wheel(config_settings), *extra]


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> list[str]:
    """As :func:`get_requires_for_build_wheel`, for ``pip install -e``."""
    extra = list(compile_core.REQUIRES) if _wanted() else []
    return [*_setuptools.get_requires_for_build_editable(config_settings), *extra]


def build_wheel(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    """Compile the twin core (best effort), then setuptools' wheel (which carries it)."""
    _compile()
    return str(_setuptools.build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    """Compile the twin core in the source tree (best effort), then setuptools' editable wheel."""
    _compile()
    return str(_setuptools.build_editable(wheel_directory, config_settings, metadata_directory))
