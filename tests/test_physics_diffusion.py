"""Pericellular O2 by 1-D diffusion-reaction, growing cultures, DO probe drift (physics.md §B7)."""

from __future__ import annotations

import math
import random

import pytest

from simulators.diffusion import (
    MediumLayer,
    slowest_time_constant_s,
    steady_cell_um,
    step_response_cell,
)
from simulators.plant import Plant, grow
from simulators.sensors import SensorModel
from simulators.vessel import SensorSection, load_vessel

DEPTH_M = 2e-3
D_M2_S = 3.0e-9


def _jmax(cells_per_cm2: float, ocr_amol_s: float = 27.0) -> float:
    """Maximum uptake flux, uM m/s."""
    return cells_per_cm2 * 1e4 * ocr_amol_s * 1e-18 * 1e3


@pytest.mark.parametrize(
    ("top_um", "cells", "km_um"),
    [(188.0, 2.5e4, 2.0), (19.2, 2.5e4, 2.0), (9.6, 2.5e4, 2.0), (9.6, 5e4, 7.4), (4.0, 5e4, 2.0)],
)
def test_steady_profile_matches_michaelis_menten_balance(
    top_um: float, cells: float, km_um: float
) -> None:
    """From a uniform start the solver settles on C_p = C_top - a C_p/(Km + C_p), within 0.5 %."""
    layer = MediumLayer(DEPTH_M, 8, top_um)
    for _ in range(2000):  # 10 000 s, > 18 slowest time constants
        layer.step(5.0, top_um, D_M2_S, _jmax(cells), km_um)
    expected = steady_cell_um(top_um, _jmax(cells) * DEPTH_M / D_M2_S, km_um)
    assert layer.cell_um == pytest.approx(expected, rel=0.005)
    # and the profile is the straight line of Fick's law
    for i, c in enumerate(layer.c):
        assert c == pytest.approx(top_um + (expected - top_um) * i / 8, rel=0.005)


def test_step_response_matches_series_solution_zero_order_uptake() -> None:
    """Surface step 180 -> 20 uM with zero-order uptake: cell layer within 1 % of the step."""
    c0, c1, km = 180.0, 20.0, 1e-6
    jmax = _jmax(2.5e4)
    drop = jmax * DEPTH_M / D_M2_S
    layer = MediumLayer(DEPTH_M, 8, c0)
    layer.settle(c0, jmax, km, D_M2_S)
    worst = 0.0
    for k in range(1, 721):  # 1 h in 5 s steps
        layer.step(5.0, c1, D_M2_S, jmax, km)
        exact = c1 - drop + (c0 - c1) * step_response_cell(5.0 * k, DEPTH_M, D_M2_S)
        worst = max(worst, abs(layer.cell_um - exact) / (c0 - c1))
    assert worst < 0.01
    assert slowest_time_constant_s(DEPTH_M, D_M2_S) / 60 == pytest.approx(9.0, abs=0.1)


def test_plant_diffusion_model_settles_on_the_lag_models_closed_form() -> None:
    """Workstation (diffusion model) at rest: cell-layer O2 = the §B2 quadratic, 4.5 uM drop."""
    plant = Plant(load_vessel("workstation-100l"))
    assert plant.layer is not None
    c_m = plant.state.medium_o2_um
    assert c_m - plant.pericellular_o2_um() == pytest.approx(4.5, rel=0.05)
    for _ in range(600):
        plant.advance(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert plant.pericellular_o2_um() == pytest.approx(
        steady_cell_um(c_m, _jmax(2.5e4) * DEPTH_M / D_M2_S, 2.0), rel=1e-3
    )


def test_growth_exponential_and_logistic() -> None:
    """ln 2 / 0.5 per day doubles in 1.386 days; the logistic cap is approached, never passed."""
    assert grow(1e4, 0.5, None, math.log(2) / 0.5 * 86400) == pytest.approx(2e4)
    capped = 1e4
    for _ in range(30):
        capped = grow(capped, 0.5, 5e4, 86400.0)
    assert 4.9e4 < capped <= 5e4
    assert grow(1e4, 0.5, 5e4, 1.0) == pytest.approx(1e4 * math.exp(0.5 / 86400), rel=1e-5)


def test_growing_culture_lowers_pericellular_o2_over_days() -> None:
    """At a fixed 5 % chamber, cells growing 0.5/day to a 5e4 cap pull the cell layer down."""
    v = load_vessel("workstation-100l")
    assert v.culture is not None
    culture = v.culture.model_copy(update={"growth_per_day": 0.5, "max_cells_per_cm2": 5e4})
    plant = Plant(v.model_copy(update={"culture": culture}))
    plant.state.o2_frac = 0.05
    plant.layer.settle(1.26 * 0.05 * 760, plant._jmax_um_m_s(), 2.0, D_M2_S)  # type: ignore[union-attr]
    seen = []
    for _day in range(4):
        for _ in range(86400 // 60):
            plant.advance(60.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            plant.state.o2_frac = 0.05  # hold the chamber (no leak in this check)
        seen.append((plant.state.cells_per_cm2, plant.pericellular_o2_um()))
    assert [c for c, _ in seen] == sorted(c for c, _ in seen)
    assert [p for _, p in seen] == sorted((p for _, p in seen), reverse=True)
    c_star = 1.26 * 0.05 * 760
    cells = seen[-1][0]
    assert seen[-1][1] == pytest.approx(
        steady_cell_um(c_star, _jmax(cells) * DEPTH_M / D_M2_S, 2.0), rel=0.01
    )


def test_existing_vessels_do_not_grow_by_default() -> None:
    v = load_vessel("bioreactor-2l")
    assert v.liquid is not None
    assert v.liquid.growth_per_day == 0.0
    plant = Plant(v)
    for _ in range(100):
        plant.advance(60.0, 0.0, 0.3, 0.0, 0.0, 0.0)
    assert plant.state.cells_per_ml == v.liquid.cells_per_ml


def test_do_probe_gain_drift() -> None:
    """1 % of reading per week: after one week a 50 %-equivalent reads 50.5."""
    spec = SensorSection(t63_s=0.0, drift_frac_per_week=0.01)
    sensor = SensorModel(spec, 60.0, 0.0, random.Random(0), initial=50.0)
    value = 0.0
    for _ in range(7 * 24 * 60):
        value = sensor.sample(50.0)
    assert value == pytest.approx(50.5, rel=1e-6)
    assert SensorSection(t63_s=1.0).drift_frac_per_week == 0.0
