"""Shared fixtures: paths; ``hold_recipe`` builds short twin recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.tuning_twin import hold_recipe

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples() -> Path:
    """The examples/ folder."""
    return EXAMPLES


__all__ = ["hold_recipe"]
