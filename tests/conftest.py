"""Shared fixtures: paths, and recipes built in code for short twin runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.recipe import Harvest, Phase, PhaseEnd, Recipe

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples() -> Path:
    """The examples/ folder."""
    return EXAMPLES


def hold_recipe(
    o2_pct: float,
    hold_h: float = 3.0,
    *,
    band_pct: float = 0.2,
    harvests: tuple[float, ...] = (),
    co2_pct: float | None = 5.0,
    until: str = "time",
) -> Recipe:
    """Equilibrate CO2 for 15 min, then a fastest O2 ramp into a hold of ``hold_h``."""
    return Recipe(
        name=f"{o2_pct} % hold",
        phases=[
            Phase(name="equilibrate", co2_pct=co2_pct, duration_h=0.25),
            Phase(
                name="hold",
                o2_pct=o2_pct,
                o2_band_pct=band_pct,
                co2_pct=co2_pct,
                temp_c=None,
                duration_h=hold_h,
                until=PhaseEnd(until),
                harvests=[Harvest(name=f"H{i}", at_exposure_h=h) for i, h in enumerate(harvests)],
            ),
        ],
    )
