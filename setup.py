"""Only the wheel's tag: everything else is in pyproject.toml.

A wheel that carries the compiled twin core (``*/_compiled/*.so``, built by buildtools/backend.py
just before) is specific to this interpreter and platform, so it must not be tagged
``py3-none-any``; without a build it is pure Python and keeps that tag.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Distribution, setup

ROOT = Path(__file__).resolve().parent


class _Distribution(Distribution):
    def has_ext_modules(self) -> bool:
        return any(ROOT.glob("*/_compiled/*.so")) or any(ROOT.glob("*/*/_compiled/*.so"))


setup(distclass=_Distribution)
