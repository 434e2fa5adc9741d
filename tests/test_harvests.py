"""Harvest timing by in-spec exposure, excursions and their attribution, latest times."""

from __future__ import annotations

import pytest

from controller.core.exposure import ExposureClock
from controller.core.recipe import Harvest, Phase, Recipe
from controller.core.recipe_engine import Measured, RecipeEngine
from simulators.twin import DoorOpening, run_twin
from simulators.vessel import load_vessel
from tests.conftest import hold_recipe


def test_exposure_counts_only_in_band_time() -> None:
    clock = ExposureClock(setpoint_pct=2.0, band_pct=0.2, debounce_s=10.0)
    values = [5.0] * 100 + [2.1] * 300 + [3.0] * 50 + [1.9] * 200
    for i, v in enumerate(values, start=1):
        clock.sample(float(i), 1.0, v)
    assert clock.exposure_s == 500.0
    stats = clock.cut(650.0)
    assert stats["excursions"] == 1
    assert stats["excursion_s"] == 50.0
    assert stats["opened_s"] == 100.0
    assert stats["window_s"] == 550.0


def test_short_glitch_below_debounce_is_not_an_excursion_but_not_exposure_either() -> None:
    clock = ExposureClock(setpoint_pct=2.0, band_pct=0.2, debounce_s=10.0)
    values = [2.0] * 100 + [2.5] * 3 + [2.0] * 100
    for i, v in enumerate(values, start=1):
        clock.sample(float(i), 1.0, v)
    assert clock.exposure_s == 200.0
    assert clock.cut(203.0)["excursions"] == 0


def test_untrusted_value_never_counts_as_exposure() -> None:
    clock = ExposureClock(setpoint_pct=2.0, band_pct=0.2)
    for i in range(1, 101):
        clock.sample(float(i), 1.0, None if 40 < i <= 70 else 2.0)
    assert clock.exposure_s == 70.0


def _engine_run(values: list[float], phase: Phase) -> tuple[RecipeEngine, list[str]]:
    engine = RecipeEngine(Recipe(name="r", phases=[phase]))
    kinds = [e.kind for e in engine.start(0.0)]
    for i, v in enumerate(values, start=1):
        kinds += [e.kind for e in engine.step(float(i), 1.0, Measured(o2_pct=v))]
    return engine, kinds


def test_harvest_due_at_exposure_not_wall_time() -> None:
    phase = Phase(
        name="hold",
        o2_pct=2.0,
        o2_band_pct=0.2,
        duration_h=1.0,
        until="exposure",
        harvests=[Harvest(name="H", at_exposure_h=0.25)],
    )
    values = [2.0] * 600 + [4.0] * 300 + [2.0] * 600
    engine, kinds = _engine_run(values, phase)
    assert "harvest_due" in kinds
    harvest = engine.harvests[0]
    assert harvest.exposure_s == 900.0
    assert harvest.at_s == 1200.0  # 900 s of exposure took 1200 s of wall time
    assert harvest.stats["excursions"] == 1


def test_latest_time_forces_a_harvest_and_flags_it() -> None:
    phase = Phase(
        name="hold",
        o2_pct=2.0,
        o2_band_pct=0.2,
        duration_h=1.0,
        until="exposure",
        harvests=[Harvest(name="H", at_exposure_h=0.5, latest_h=0.6)],
    )
    engine, _ = _engine_run([3.0] * 3000, phase)
    harvest = engine.harvests[0]
    assert harvest.forced_by_latest
    assert harvest.at_s == pytest.approx(0.6 * 3600)
    assert harvest.exposure_s == 0.0


def test_pump_harvest_runs_for_volume_over_flow() -> None:
    phase = Phase(
        name="hold",
        o2_pct=2.0,
        duration_h=1.0,
        until="exposure",
        harvests=[
            Harvest(name="H", at_exposure_h=0.1, action="pump", volume_ml=50, flow_ml_per_min=25)
        ],
    )
    engine = RecipeEngine(Recipe(name="r", phases=[phase]))
    engine.start(0.0)
    events = []
    for i in range(1, 1000):
        events += engine.step(float(i), 1.0, Measured(o2_pct=2.0))
    start = next(e for e in events if e.kind == "pump_start")
    stop = next(e for e in events if e.kind == "pump_stop")
    assert stop.t_s - start.t_s == pytest.approx(120.0)
    assert any(e.kind == "harvest_done" and e.detail["by"] == "pump" for e in events)


@pytest.fixture(scope="module")
def door_runs() -> tuple[list[dict[str, float]], list[dict[str, float]], float]:
    """The same 2 % hold with harvests at 1 h and 2 h of exposure, without and with a door
    opening at 1.5 h of exposure (inside the second harvest's window)."""
    recipe = hold_recipe(2.0, hold_h=2.0, harvests=(1.0, 2.0), until="exposure")
    vessel = load_vessel("workstation-100l")
    base = run_twin(recipe, vessel, seed=3, record_every_s=60.0)
    first = base.engine.harvests[0]
    door_at = first.at_s + 0.5 * 3600
    door = run_twin(recipe, vessel, seed=3, record_every_s=60.0, doors=[DoorOpening(door_at, 30.0)])
    return (
        [h.as_dict() for h in base.engine.harvests],
        [h.as_dict() for h in door.engine.harvests],
        door_at,
    )


def test_door_delays_only_the_affected_harvest_by_the_out_of_band_time(
    door_runs: tuple[list[dict[str, float]], list[dict[str, float]], float],
) -> None:
    base, door, _ = door_runs
    assert [h["exposure_s"] for h in door] == [3600.0, 7200.0]
    assert door[0]["at_s"] == base[0]["at_s"]  # the first harvest is untouched
    delay = door[1]["at_s"] - base[1]["at_s"]
    out_of_band = door[1]["excursion_s"]
    assert delay > 300.0  # a full door costs minutes of exposure
    assert delay == pytest.approx(out_of_band, abs=2.0)  # within one control period or two


def test_door_counts_as_excursion_on_that_harvest_only(
    door_runs: tuple[list[dict[str, float]], list[dict[str, float]], float],
) -> None:
    base, door, _ = door_runs
    assert [h["excursions"] for h in base] == [0, 0]
    assert [h["excursions"] for h in door] == [0, 1]
    assert door[1]["dose_error_pct_h"] > base[1]["dose_error_pct_h"]
    assert door[1]["in_band_frac"] < 1.0
