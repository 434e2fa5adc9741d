"""One benchmark case of bench/control.py: run the twin, measure against targets T1-T8, T11.

Formulas (docs/performance-control.md states them for readers):

* T1 ratio = time to enter and stay 30 min within +/- 0.1 % (measured O2) / t_bb(x0 -> x_sp +
  0.1 %); limit 1.2 + 2 theta_eff / t_bb, theta_eff = transport + O2 sensor t63 + half a period.
* T3 recovery = time from door closed until the measured O2 is within +/- 0.2 % and stays 10 min,
  / t_bb(x_peak -> x_sp) (x_peak = true O2 at door closed); integrated excess = integral of
  (x_true - x_sp) from door closed to the end of the hold, / ideal bang-bang excess
  (x_inf - x_sp) t_bb + tau_f (x_peak - x_sp).
* T6 CO2 after the door: from door closed until the reading is >= 98 % of the set point for 5 min,
  against max(1.2 t_min, 3 min); t_min refills from the CO2 left at door closed (door model) at
  full CO2 while the O2 recovery runs N2 at full flow (c_inf = Q_C,max / (Q_C,max + Q_N,max + Q_L)).
* T5 N2 minimum = sum over purges V ln(x_start / x_sp) + integral of Q_L (x_a / x_ideal(t) - 1)
  along the ideal bang-bang trajectory + Q_A,req (x_a / x_sp - 1) T - integral of the CO2 actually
  injected (its dilution credit); eta = 1; Q_A,req = minimum through-flow x_sp / x_a (overlay).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from common.config_errors import ConfigError
from controller.core.process import (
    X_AIR_CO2,
    X_AIR_O2,
    ProcessModel,
    bang_bang_descent_s,
    co2_ratio_lpm,
    leak_floor_frac,
    purge_n2_litres,
)
from controller.core.reactor import ReactorController
from controller.core.recipe import Phase, Recipe, check_feasible
from controller.engineering.loop_analysis import margins
from simulators.summary import o2_metrics
from simulators.twin import SERIES_COLUMNS, DoorOpening, TwinResult, run_twin
from simulators.vessel import InitialSection, Vessel, load_vessel

COL = {name: i for i, name in enumerate(SERIES_COLUMNS)}
EQUILIBRATE_S = 900.0
CO2_PCT = 5.0
TEMP_C = 37.0
ANOXIA_PCT = 0.05
STEADY_S = 5400.0
"""Steady window between the settled band entry (+ 30 min) and the door opening, s."""


@dataclass(frozen=True)
class Case:
    """A benchmark run: vessel, set point (gas O2 % or DO %-equivalent) and model errors."""

    vessel: str
    sp_pct: float
    kind: str = "gas"
    volume: float = 1.0
    leak: float = 1.0
    gain: float = 1.0
    delay: float = 1.0
    seed: int = 1
    keep_series: bool = False

    @property
    def errors(self) -> tuple[float, float, float, float]:
        return (self.volume, self.leak, self.gain, self.delay)


def controller_model(true: ProcessModel, case: Case) -> ProcessModel:
    """The controller's (wrong) model: volume x V, leak x L, delay x theta, and a gain error g.

    A gain error g scales everything the allocation multiplies by (V, Q_L, C, UA): the controller
    then delivers g times the requested rate of change, with the disturbance model unchanged.
    """
    g = case.gain
    return true.model_copy(
        update={
            "volume_l": true.volume_l * case.volume * g,
            "leak_lpm": true.leak_lpm * case.leak * g,
            "heat_capacity_j_per_k": true.heat_capacity_j_per_k * g,
            "ua_w_per_k": true.ua_w_per_k * g,
            "transport_delay_s": true.transport_delay_s * case.delay,
            "o2_sensor_t63_s": true.o2_sensor_t63_s * case.delay,
            "co2_sensor_t63_s": true.co2_sensor_t63_s * case.delay,
            "temp_sensor_t63_s": true.temp_sensor_t63_s * case.delay,
        }
    )


def equilibrate_phase() -> Phase:
    """15 min at 5 % CO2 and 37 degC, O2 uncontrolled, before every benchmark move."""
    return Phase(
        name="equilibrate", co2_pct=CO2_PCT, temp_c=TEMP_C, duration_h=EQUILIBRATE_S / 3600
    )


def warm_vessel(name: str) -> Vessel:
    """Reference vessel starting at 37 degC (temperature measured holding, not heating)."""
    v = load_vessel(name)
    return v.model_copy(update={"initial": InitialSection(temp_c=TEMP_C)})


def o2_ms(true: ProcessModel, model: ProcessModel, case: Case) -> float:
    """Sensitivity peak of the O2 loop: the controller's PI on the true delay and lags."""
    pi = ReactorController(model).o2.pi
    loop_gain = case.volume * case.gain  # the allocation scales flows by V_model / V_true
    filter_s = ReactorController(model).o2.tuning.filter_s
    delay = true.transport_delay_s + 0.5 * true.control_period_s
    lag = true.o2_sensor_t63_s + filter_s
    return margins(loop_gain, delay, pi.kp_per_s, pi.ti_s, lag).ms


@dataclass
class Outcome:
    case: Case
    reachable: bool = True
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


def run_case(case: Case) -> Outcome:
    """Run one case and measure it."""
    if case.kind == "do":
        from control_do import run_do_case  # noqa: PLC0415 - sibling bench module

        return run_do_case(case)
    vessel = warm_vessel(case.vessel)
    true = vessel.process_model()
    model = controller_model(true, case)
    x_sp = case.sp_pct / 100.0
    probe = Recipe(
        name="probe",
        phases=[Phase(name="hold", o2_pct=case.sp_pct, co2_pct=CO2_PCT, duration_h=1.0)],
    )
    try:
        check_feasible(probe, true, "bench", vessel.name)
    except ConfigError:
        floor = 100.0 * leak_floor_frac(true, CO2_PCT / 100.0)
        return Outcome(case, False, f"not reachable: leak floor {floor:.3f} %")
    t_bb0 = bang_bang_descent_s(true, 0.199, x_sp, CO2_PCT / 100.0)
    door_at = EQUILIBRATE_S + 1.3 * t_bb0 + 1800.0 + STEADY_S
    hold_s = door_at - EQUILIBRATE_S + 1.5 * t_bb0 + 3600.0
    hold = Phase(
        name="hold",
        o2_pct=case.sp_pct,
        o2_band_pct=0.2,
        co2_pct=CO2_PCT,
        temp_c=TEMP_C,
        duration_h=hold_s / 3600.0,
    )
    recipe = Recipe(name=f"bench {case.sp_pct:g} %", phases=[equilibrate_phase(), hold])
    door = DoorOpening(door_at, 30.0)
    result = run_twin(recipe, vessel, seed=case.seed, doors=[door], record_every_s=1.0, model=model)
    out = Outcome(case)
    m = out.metrics
    o2 = o2_metrics(result)
    t_bb = o2["bang_bang_min_s"]
    m["t_band_s"], m["t_bb_s"], m["ratio"] = o2["time_to_band_s"], t_bb, o2["ratio"]
    m["ratio_limit"] = 1.2 + 2.0 * true.o2_dead_time_s / t_bb
    m["undershoot_pct"] = o2["undershoot_pct"]
    m["mean_err_pct"], m["two_sigma_pct"] = o2["steady_mean_error_pct"], o2["steady_2sigma_pct"]
    m["ms"] = o2_ms(true, model, case)
    _door_metrics(result, true, x_sp, door, m)
    _gas_metrics(result, true, x_sp, door, m)
    _co2_temp_metrics(result, true, door, m)
    if case.keep_series:
        rows = result.rows[::10]
        out.series = {
            "t_s": [r[COL["t_s"]] for r in rows],
            "o2_pct": [r[COL["o2_pct"]] for r in rows],
            "o2_true_pct": [r[COL["o2_true_pct"]] for r in rows],
            "n2_lpm": [r[COL["n2_lpm"]] for r in rows],
        }
        out.metrics["x0"] = o2["start_pct"] / 100.0
    return out


def _stays(
    times: Any, values: Any, start: int, centre: float, band: float, hold_s: float
) -> int | None:
    """First index from ``start`` after which ``values`` stay within band for ``hold_s``."""
    entry = None
    for i in range(start, len(times)):
        if abs(values[i] - centre) <= band + 1e-9:
            entry = i if entry is None else entry
            if times[i] - times[entry] >= hold_s:
                return entry
        else:
            entry = None
    return entry


def _door_metrics(
    r: TwinResult, true: ProcessModel, x_sp: float, door: DoorOpening, m: dict[str, Any]
) -> None:
    tr = r.trace
    close = door.at_s + door.duration_s
    i_close = next(i for i, t in enumerate(tr.t_s) if t >= close)
    x_peak = tr.o2_true_pct[i_close] / 100.0
    co2 = CO2_PCT / 100.0
    back = _stays(tr.t_s, tr.o2_pct, i_close, 100 * x_sp, 0.2, 600.0)
    t_bb_peak = bang_bang_descent_s(true, x_peak, x_sp, co2)
    m["door_peak_pct"] = 100 * x_peak
    m["recovery_s"] = None if back is None else tr.t_s[back] - close
    m["recovery_ratio"] = None if back is None else m["recovery_s"] / t_bb_peak
    dt = r.vessel.control_period_s
    excess = sum(tr.o2_true_pct[i] - 100 * x_sp for i in range(i_close, len(tr.t_s))) * dt / 60
    q_c = min(co2_ratio_lpm(co2, true.n2_max_lpm, true.leak_lpm), true.co2_max_lpm)
    q_f = true.n2_max_lpm + q_c + true.leak_lpm
    tau_f_min = true.volume_l / q_f
    x_inf = true.leak_lpm * X_AIR_O2 / q_f
    ideal = 100 * ((x_inf - x_sp) * t_bb_peak / 60 + tau_f_min * (x_peak - x_sp))
    m["excess_pct_min"], m["excess_ideal_pct_min"] = excess, ideal
    m["excess_ratio"] = excess / ideal if ideal > 0 else None
    m["undershoot_door_pct"] = max(0.0, 100 * x_sp - min(tr.o2_true_pct[i_close:]))


def _leak_litres_ideal(
    true: ProcessModel, x0: float, x_sp: float, co2: float
) -> tuple[float, float]:
    """(integral of Q_L (x_a/x - 1) dt along the bang-bang purge x0 -> x_sp in L, its length s)."""
    t_bb = bang_bang_descent_s(true, x0, x_sp, co2)
    if not math.isfinite(t_bb) or t_bb <= 0 or true.leak_lpm <= 0:
        return 0.0, max(t_bb, 0.0) if math.isfinite(t_bb) else 0.0
    q_c = min(co2_ratio_lpm(co2, true.n2_max_lpm, true.leak_lpm), true.co2_max_lpm)
    q_f = true.n2_max_lpm + q_c + true.leak_lpm
    x_inf = true.leak_lpm * X_AIR_O2 / q_f
    tau = 60.0 * true.volume_l / q_f
    n = 400
    total = 0.0
    for k in range(n):
        x = x_inf + (x0 - x_inf) * math.exp(-(k + 0.5) * t_bb / n / tau)
        total += true.leak_lpm * (X_AIR_O2 / x - 1.0) * t_bb / n / 60.0
    return total, t_bb


def _gas_metrics(
    r: TwinResult, true: ProcessModel, x_sp: float, door: DoorOpening, m: dict[str, Any]
) -> None:
    rows = [row for row in r.rows if row[COL["phase"]] == "hold"]
    dt = r.vessel.control_period_s
    hold_s = len(rows) * dt
    co2_l = sum(row[COL["co2_lpm"]] for row in rows) * dt / 60.0
    air_l = sum(row[COL["air_lpm"]] for row in rows) * dt / 60.0
    n2_l = sum(row[COL["n2_lpm"]] for row in rows) * dt / 60.0
    co2 = CO2_PCT / 100.0
    x_start = rows[0][COL["o2_true_pct"]] / 100.0
    x_peak = m["door_peak_pct"] / 100.0
    purge_l = purge_n2_litres(true.volume_l, x_start, x_sp) + purge_n2_litres(
        true.volume_l, x_peak, x_sp
    )
    leak1, t1 = _leak_litres_ideal(true, x_start, x_sp, co2)
    leak2, t2 = _leak_litres_ideal(true, x_peak, x_sp, co2)
    held_s = max(hold_s - t1 - t2 - door.duration_s, 0.0)
    q_air_req = true.min_through_flow_lpm * x_sp / X_AIR_O2
    steady_l = (true.leak_lpm + q_air_req) * (X_AIR_O2 / x_sp - 1.0) * held_s / 60.0
    minimum = purge_l + leak1 + leak2 + steady_l - co2_l
    m["n2_l"], m["n2_min_l"], m["air_l"] = n2_l, minimum, air_l
    m["n2_ratio"] = n2_l / minimum if minimum > 0 else None


def _co2_temp_metrics(
    r: TwinResult, true: ProcessModel, door: DoorOpening, m: dict[str, Any]
) -> None:
    rows = r.rows
    t = [row[COL["t_s"]] for row in rows]
    purge = [
        row for row in rows if row[COL["o2_mode"]] == "purge_down" and row[COL["t_s"]] < door.at_s
    ]
    m["co2_purge_dev_pct"] = max(
        (abs(row[COL["co2_pct"]] - CO2_PCT) for row in purge), default=None
    )
    close = door.at_s + door.duration_s
    i_close = next(i for i, ti in enumerate(t) if ti >= close)
    co2 = [row[COL["co2_pct"]] for row in rows]
    goal = 0.98 * CO2_PCT
    back = next(
        (i for i in range(i_close, len(t)) if all(c >= goal for c in co2[i : i + 300])), None
    )
    # true CO2 when the door closes (door model: exchange frac, tau_door), then the minimum
    # refill with full CO2 while the O2 recovery purge runs N2 at full flow
    g = r.vessel.gas
    c_low = X_AIR_CO2 + (CO2_PCT / 100 - X_AIR_CO2) * math.exp(
        -g.door_exchange_frac * door.duration_s / g.door_tau_s
    )
    q = true.co2_max_lpm + true.n2_max_lpm + true.leak_lpm
    c_inf = true.co2_max_lpm / q
    t_min = 60 * true.volume_l / q * math.log((c_inf - c_low) / (c_inf - goal / 100))
    m["co2_recovery_s"] = None if back is None else t[back] - close
    m["co2_recovery_min_s"] = t_min
    m["co2_recovery_limit_s"] = max(1.2 * t_min, 180.0)
    temps = [row[COL["temp_c"]] for row in rows]
    steady = [temps[i] for i, ti in enumerate(t) if door.at_s - STEADY_S <= ti < door.at_s]
    m["temp_dev_k"] = max(abs(x - TEMP_C) for x in steady)
    m["temp_2sigma_k"] = 2 * statistics.pstdev(steady)
    tback = _stays(t, temps, i_close, TEMP_C, 0.2, 600.0)
    m["temp_recovery_s"] = None if tback is None else t[tback] - close
    m["temp_overshoot_k"] = max(0.0, max(temps[i_close:]) - TEMP_C)
