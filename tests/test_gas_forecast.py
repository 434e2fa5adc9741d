"""Gas-cylinder forecast: closed forms of the plan, alarms, and a cylinder run empty on the twin."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controller.core.process import X_AIR_O2, bang_bang_descent_s, co2_ratio_lpm, steady_n2_lpm
from controller.engineering.gas_forecast import (
    Cylinder,
    CylinderForecast,
    RunPosition,
    cylinder_alarms,
    forecast_cylinders,
    plan_segments,
)
from simulators.tuning_twin import hold_recipe
from simulators.twin import SERIES_COLUMNS, run_twin
from simulators.vessel import load_vessel

COL = {name: i for i, name in enumerate(SERIES_COLUMNS)}


def test_plan_uses_bang_bang_purge_and_steady_leak_balance() -> None:
    model = load_vessel("workstation-100l").process_model()
    recipe = hold_recipe(1.0, 4.0)
    segments = plan_segments(model, recipe)
    purge = next(s for s in segments if s.label == "hold: N2 purge")
    hold = next(s for s in segments if s.label == "hold: hold")
    assert purge.duration_s == pytest.approx(bang_bang_descent_s(model, X_AIR_O2, 0.01, 0.05))
    assert purge.flows_lpm["n2"] == model.n2_max_lpm
    q_c = hold.flows_lpm["co2"]
    assert q_c == pytest.approx(co2_ratio_lpm(0.05, hold.flows_lpm["n2"], model.leak_lpm))
    assert hold.flows_lpm["n2"] == pytest.approx(steady_n2_lpm(model, 0.01, q_c))
    assert hold.start_s + hold.duration_s == pytest.approx(4.25 * 3600)  # time phases keep length
    doors = plan_segments(model, recipe, doors_per_day=4.0)
    extra = next(s for s in doors if s.label == "hold: hold").litres("n2") - hold.litres("n2")
    per_door = model.volume_l * math.log(X_AIR_O2 / 0.01)
    assert extra == pytest.approx(4.0 * per_door * hold.duration_s / 86400.0)


def test_alarm_only_for_cylinders_that_run_out_before_the_end() -> None:
    lasting = CylinderForecast("co2", 3600.0, 500.0, None, 10 * 3600.0, 80.0, 1.0)
    short = CylinderForecast("n2", 3600.0, 200.0, 3 * 3600.0, 10 * 3600.0, 900.0, 1.0)
    alarms = cylinder_alarms([lasting, short], critical_lead_s=3600.0)
    assert [a.gas for a in alarms] == ["n2"]
    assert alarms[0].severity == "warning"
    assert "cylinder N2 will run out at t=3.0 h before the run ends at 10.0 h" in alarms[0].message
    assert "lead time 2.0 h" in alarms[0].message
    soon = CylinderForecast("n2", 3600.0, 10.0, 4000.0, 10 * 3600.0, 900.0, 1.0)
    assert cylinder_alarms([soon])[0].severity == "critical"


def _cylinder_run(
    vessel_name: str, leak_lpm: float | None
) -> tuple[list[tuple[float, float]], list[tuple[Any, ...]]]:
    vessel = load_vessel(vessel_name)
    if leak_lpm is not None:
        vessel = vessel.model_copy(
            update={"gas": vessel.gas.model_copy(update={"leak_lpm": leak_lpm})}
        )
    result = run_twin(
        hold_recipe(1.0, 8.0),
        vessel,
        seed=1,
        record_every_s=1.0,
        model=load_vessel(vessel_name).process_model(),
    )
    used, t_prev, series = 0.0, 0.0, []
    for row in result.rows:
        t = row[COL["t_s"]]
        used += row[COL["n2_lpm"]] * (t - t_prev) / 60.0
        t_prev = t
        series.append((t, used))
    return series, result.rows


@pytest.mark.parametrize(
    ("leak_lpm", "capacity_l", "at_h"),
    [(None, 900.0, 2.0), (0.2, 1000.0, 1.0)],
    ids=["nominal leak", "leak 2x what the model says"],
)
def test_forecast_predicts_when_a_simulated_cylinder_runs_out(
    leak_lpm: float | None, capacity_l: float, at_h: float
) -> None:
    """N2 drawn from a cylinder of ``capacity_l`` on the twin; forecast at ``at_h`` is within
    10 % of the remaining time to empty."""
    series, rows = _cylinder_run("workstation-100l", leak_lpm)
    empty_s = next(t for t, used in series if used >= capacity_l)
    i = next(k for k, (t, _u) in enumerate(series) if t >= at_h * 3600.0)
    now, used = series[i]
    row = rows[i]
    model = load_vessel("workstation-100l").process_model()
    at = RunPosition(
        phase_index=1,
        progress_s=now - 900.0,
        now_s=now,
        o2_frac=row[COL["o2_pct"]] / 100.0,
        co2_frac=row[COL["co2_pct"]] / 100.0,
    )
    cylinder = Cylinder("n2", capacity_l, capacity_l - used)
    recipe = hold_recipe(1.0, 8.0)
    forecast = forecast_cylinders(model, recipe, [cylinder], at, {"n2": used})[0]
    assert empty_s < 8.25 * 3600  # the test's premise: the cylinder runs dry during the run
    assert forecast.empty_at_s is not None
    assert abs(forecast.empty_at_s - empty_s) <= 0.1 * (empty_s - now)
    alarm = cylinder_alarms([forecast])[0]
    assert "before the run ends at 8.2 h" in alarm.message
    if leak_lpm is not None:
        assert forecast.calibration == pytest.approx(2.0, rel=0.15)  # the leak it was not told
