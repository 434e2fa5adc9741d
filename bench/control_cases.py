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

Same-signal minimums (issue 14). T1, T3 and T6 are judged on the *reading*, so their minimums are
taken on the reading too: the ideal bang-bang chamber trajectory (full actuation from the true
chamber state, stopping exactly at the set point and held there) is passed through the vessel's
own sensor model (transport delay and first-order lag, noise-free), starting from the sensor state
the run actually had at that instant (the true chamber history replayed through the same model).
The minimum is when that ideal reading meets the same band criterion as the measurement:

* T1: reading within +/- 0.1 % (it then stays), from the ramp start;
* T3: reading within +/- 0.2 % for 10 min, from door closed;
* T6: CO2 reading >= 98 % of 5 % for 5 min, from door closed; the ideal doses CO2 at its maximum
  with the N2 / air / O2 flows the run actually had (the concurrent O2 recovery), and the true CO2
  (not recorded by the twin) is rebuilt from the recorded flows with the plant's exact step.

MFC travel: sum of |change of the commanded set point| per hour (L/min per h) of N2 and CO2 over the
steady window, from the commands the controller returned (recorded by a subclass of the controller
the twin builds).
"""

from __future__ import annotations

import itertools
import math
import random
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
from controller.core.reactor import Actuation, ControllerTuning, ReactorController
from controller.core.recipe import Phase, Recipe, check_feasible
from controller.core.recipe_engine import Measured
from controller.engineering.loop_analysis import o2_loop_margins
from simulators import twin as twin_module
from simulators.sensors import SensorModel
from simulators.summary import SETTLE_S, o2_metrics
from simulators.twin import SERIES_COLUMNS, DoorOpening, TwinResult, run_twin
from simulators.vessel import InitialSection, SensorSection, Vessel, load_vessel

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
    observer: bool = True

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


def tuning_of(case: Case) -> ControllerTuning | None:
    """The controller's tuning for ``case``: the defaults, or without the headspace observer."""
    return None if case.observer else ControllerTuning(observer=None)


def o2_ms(
    true: ProcessModel,
    model: ProcessModel,
    x_sp: float,
    ctl: ReactorController,
    tuning: ControllerTuning | None = None,
) -> tuple[float, float]:
    """Sensitivity peak of the O2 loop on the true plant: (as run at the end, after adaptation;
    before adaptation, a fresh controller with the wrong model)."""
    fresh = ReactorController(model, tuning)
    fresh.step(true.control_period_s, Measured(o2_pct=100.0 * x_sp, co2_pct=CO2_PCT, temp_c=TEMP_C))
    return (
        o2_loop_margins(ctl, true, x_sp, CO2_PCT / 100.0).ms,
        o2_loop_margins(fresh, true, x_sp, CO2_PCT / 100.0).ms,
    )


def run_recorded(
    recipe: Recipe,
    vessel: Vessel,
    seed: int,
    doors: list[DoorOpening],
    model: ProcessModel | None,
    tuning: ControllerTuning | None = None,
) -> tuple[TwinResult, list[tuple[float, float]], ReactorController]:
    """``run_twin`` with every cycle's N2 and CO2 *commands* recorded (the twin records flows).

    The twin builds its controller from ``simulators.twin.ReactorController``; for this one run
    that name points at a subclass that records what ``step`` returns (process-local, restored).
    """
    commands: list[tuple[float, float]] = []
    built: list[ReactorController] = []

    class Recording(ReactorController):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

        def step(self, *args: Any, **kwargs: Any) -> Actuation:
            act = super().step(*args, **kwargs)
            commands.append((act.n2_lpm, act.co2_lpm))
            return act

    original = twin_module.ReactorController  # type: ignore[attr-defined]
    twin_module.ReactorController = Recording  # type: ignore[attr-defined]
    try:
        result = run_twin(
            recipe, vessel, seed=seed, doors=doors, record_every_s=1.0, model=model, tuning=tuning
        )
    finally:
        twin_module.ReactorController = original  # type: ignore[attr-defined]
    return result, commands, built[0]


def adapted_parameters(ctl: ReactorController, true: ProcessModel) -> dict[str, Any]:
    """What the controller learned about its vessel, as factors of the true volume and leak."""
    found = getattr(ctl, "adapted", None)
    if found is None:
        return {}
    params = found()
    out: dict[str, Any] = {}
    if "volume_l" in params:
        out["adapted_volume_x"] = params["volume_l"] / true.volume_l
    if "leak_lpm" in params:
        out["adapted_leak_lpm"] = params["leak_lpm"]
    return out


def quiet_sensor(spec: SensorSection, dt_s: float, delay_s: float, initial: float) -> SensorModel:
    """The vessel's sensor model without noise or quantisation (delay, lag, drift, bias kept)."""
    quiet = spec.model_copy(update={"noise_sd": 0.0, "resolution": 0.0})
    return SensorModel(quiet, dt_s, delay_s, random.Random(0), initial)


def read_through(
    spec: SensorSection, dt_s: float, delay_s: float, initial: float, values: list[float]
) -> list[float]:
    """Noise-free readings of ``values`` (one per step after the initial sample), same units."""
    sensor = quiet_sensor(spec, dt_s, delay_s, initial)
    sensor.sample(initial)  # the twin samples the initial state once before the first step
    return [sensor.sample(v) for v in values]


def read_both(
    spec: SensorSection,
    dt_s: float,
    delay_s: float,
    initial: float,
    true_values: list[float],
    ideal_values: list[float],
) -> tuple[list[float], list[float]]:
    """Noise-free readings of the true and of the ideal trajectory by the same sensor model.

    T1/T3/T6 times and their minimums are both taken on these: the sensor's delay and lag are
    part of what is judged, its noise (a property of the sensor, the same for any controller)
    is not, so the ratio says how much later than the ideal the chamber was, as read.
    """
    return (
        read_through(spec, dt_s, delay_s, initial, true_values),
        read_through(spec, dt_s, delay_s, initial, ideal_values),
    )


def _settled(
    times: Any, values: Any, start: int, end: int, centre: float, hold_s: float
) -> int | None:
    """First index in [start, end] from which ``values`` stay within +/- 0.1 of ``centre`` for
    ``hold_s`` (or to ``end``): the run summary's band-entry criterion."""
    entry: int | None = None
    for i in range(start, end + 1):
        if abs(values[i] - centre) <= 0.1 + 1e-9:
            if entry is None:
                entry = i
            if times[i] - times[entry] >= hold_s:
                return entry
        else:
            entry = None
    return entry


def ideal_descent_pct(r: TwinResult, x0: float, x_sp: float, start: int) -> list[float]:
    """Chamber O2 (%) of the bang-bang move from ``x0`` after trace index ``start``: full N2 with
    the CO2 the run actually injected (it dilutes O2 too), stopped and held at ``x_sp``."""
    v = r.vessel
    g, dt = v.gas, v.control_period_s
    out, x = [], x0
    for row in r.rows[start + 1 :]:
        q_f = g.n2_max_lpm + row[COL["co2_lpm"]] + g.leak_lpm
        x_inf = g.leak_lpm * X_AIR_O2 / q_f
        if x > x_sp:
            x = max(x_inf + (x - x_inf) * math.exp(-q_f * dt / 60.0 / g.volume_l), x_sp)
        out.append(100.0 * x)
    return out


def _descent_reading_minimum(
    r: TwinResult, true: ProcessModel, x_sp: float, o2: dict[str, Any], m: dict[str, Any]
) -> None:
    """T1 on one signal: true and ideal descent read noise-free by the same sensor model."""
    tr, v = r.trace, r.vessel
    dt = v.control_period_s
    i0 = next(i for i, t in enumerate(tr.t_s) if t >= o2["ramp_start_s"] - 1e-9)
    x0 = tr.o2_true_pct[i0] / 100.0
    assert len(r.rows) == len(tr.t_s)
    ideal = [*tr.o2_true_pct[: i0 + 1], *ideal_descent_pct(r, x0, x_sp, i0)]
    seen, best = read_both(
        v.o2_sensor, dt, v.gas.transport_delay_s, v.initial.o2_pct, list(tr.o2_true_pct), ideal
    )
    end = i0
    while end + 1 < len(tr.t_s) and tr.phase[end + 1] == tr.phase[i0] and not tr.door[end + 1]:
        end += 1
    entry = _settled(tr.t_s, seen, i0, end, 100.0 * x_sp, SETTLE_S)
    ideal_entry = _settled(tr.t_s, best, i0, end, 100.0 * x_sp, SETTLE_S)
    m["t_band_read_s"] = None if entry is None else tr.t_s[entry] - tr.t_s[i0]
    m["t_band_min_s"] = None if ideal_entry is None else tr.t_s[ideal_entry] - tr.t_s[i0]
    m["ratio"] = (
        None
        if m["t_band_read_s"] is None or not m["t_band_min_s"]
        else m["t_band_read_s"] / m["t_band_min_s"]
    )


@dataclass
class Outcome:
    case: Case
    reachable: bool = True
    note: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[float]] = field(default_factory=dict)


def run_case(
    case: Case, *, model: ProcessModel | None = None, tuning: ControllerTuning | None = None
) -> Outcome:
    """Run one case and measure it.

    ``model`` and ``tuning`` replace the case's controller model (the true one with the case's
    errors) and tuning: how a commissioning tool's identified vessel and proposed gains are
    scored on the same grid (``hypoxia identify``, tests/test_identify.py).
    """
    if case.kind == "do":
        from control_do import run_do_case  # noqa: PLC0415 - sibling bench module

        return run_do_case(case)
    vessel = warm_vessel(case.vessel)
    true = vessel.process_model()
    model = model or controller_model(true, case)
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
    tuning = tuning or tuning_of(case)
    result, commands, ctl = run_recorded(recipe, vessel, case.seed, [door], model, tuning)
    out = Outcome(case)
    m = out.metrics
    o2 = o2_metrics(result)
    t_bb = o2["bang_bang_min_s"]
    m["t_band_s"], m["t_bb_s"] = o2["time_to_band_s"], t_bb
    m["ratio_chamber_basis"] = o2["ratio"]
    m["undershoot_pct"] = o2["undershoot_pct"]
    m["mean_err_pct"], m["two_sigma_pct"] = o2["steady_mean_error_pct"], o2["steady_2sigma_pct"]
    m["ms"], m["ms_initial"] = o2_ms(true, model, x_sp, ctl, tuning)
    _descent_reading_minimum(result, true, x_sp, o2, m)
    _door_metrics(result, true, x_sp, door, m)
    _gas_metrics(result, true, x_sp, door, m)
    _co2_temp_metrics(result, true, door, m)
    _travel_metrics(result, commands, door, m)
    m.update(adapted_parameters(ctl, true))
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
    m["recovery_ratio_chamber_basis"] = None if back is None else m["recovery_s"] / t_bb_peak
    # the same criterion on the ideal recovery read through the same sensor
    v = r.vessel
    path = [*tr.o2_true_pct[: i_close + 1], *ideal_descent_pct(r, x_peak, x_sp, i_close)]
    seen, best = read_both(
        v.o2_sensor,
        v.control_period_s,
        v.gas.transport_delay_s,
        v.initial.o2_pct,
        list(tr.o2_true_pct),
        path,
    )
    back_read = _stays(tr.t_s, seen, i_close, 100 * x_sp, 0.2, 600.0)
    ideal_back = _stays(tr.t_s, best, i_close, 100 * x_sp, 0.2, 600.0)
    m["recovery_read_s"] = None if back_read is None else tr.t_s[back_read] - close
    m["recovery_min_s"] = None if ideal_back is None else tr.t_s[ideal_back] - close
    m["recovery_ratio"] = (
        None
        if m["recovery_read_s"] is None or not m["recovery_min_s"]
        else m["recovery_read_s"] / m["recovery_min_s"]
    )
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
    # old basis: chamber refill time from the door model's CO2 at close with N2 at full flow
    g = r.vessel.gas
    c_low = X_AIR_CO2 + (CO2_PCT / 100 - X_AIR_CO2) * math.exp(
        -g.door_exchange_frac * door.duration_s / g.door_tau_s
    )
    q = true.co2_max_lpm + true.n2_max_lpm + true.leak_lpm
    c_inf = true.co2_max_lpm / q
    t_min = 60 * true.volume_l / q * math.log((c_inf - c_low) / (c_inf - goal / 100))
    m["co2_recovery_s"] = None if back is None else t[back] - close
    m["co2_recovery_chamber_min_s"] = t_min
    # same signal: the ideal refill from the true CO2 at close, read through the CO2 sensor
    v = r.vessel
    chamber = co2_chamber_pct(r)
    ideal = [*chamber[: i_close + 1], *ideal_co2_refill_pct(r, chamber[i_close] / 100.0, i_close)]
    seen, best = read_both(
        v.co2_sensor, v.control_period_s, g.transport_delay_s, v.initial.co2_pct, chamber, ideal
    )

    def first_back(values: list[float]) -> int | None:
        return next(
            (
                i
                for i in range(i_close, len(t))
                if all(c >= goal - 1e-9 for c in values[i : i + 300])
            ),
            None,
        )

    back_read, ideal_back = first_back(seen), first_back(best)
    m["co2_door_low_pct"] = chamber[i_close]
    m["co2_recovery_read_s"] = None if back_read is None else t[back_read] - close
    m["co2_recovery_min_s"] = None if ideal_back is None else t[ideal_back] - close
    m["co2_recovery_ratio"] = (
        None
        if back_read is None or not m["co2_recovery_min_s"]
        else m["co2_recovery_read_s"] / m["co2_recovery_min_s"]
    )
    m["co2_overshoot_pct"] = max(0.0, max(chamber[i_close:]) - CO2_PCT)
    m["co2_reconstruction_rms_pct"] = (
        statistics.fmean((a - b) ** 2 for a, b in zip(co2, seen, strict=True)) ** 0.5
    )
    temps = [row[COL["temp_c"]] for row in rows]
    steady = [temps[i] for i, ti in enumerate(t) if door.at_s - STEADY_S <= ti < door.at_s]
    m["temp_dev_k"] = max(abs(x - TEMP_C) for x in steady)
    m["temp_2sigma_k"] = 2 * statistics.pstdev(steady)
    tback = _stays(t, temps, i_close, TEMP_C, 0.2, 600.0)
    m["temp_recovery_s"] = None if tback is None else t[tback] - close
    m["temp_overshoot_k"] = max(0.0, max(temps[i_close:]) - TEMP_C)


def co2_chamber_pct(r: TwinResult) -> list[float]:
    """True chamber CO2 (%) per recorded step, rebuilt with the plant's exact step from the
    recorded actual flows and door state (the twin records the CO2 reading only)."""
    v = r.vessel
    g, dt = v.gas, v.control_period_s
    c = v.initial.co2_pct / 100.0
    out = []
    for row in r.rows:
        q_door = (
            g.door_exchange_frac * g.volume_l * 60.0 / g.door_tau_s
            if row[COL["door_open"]]
            else 0.0
        )
        room = row[COL["air_lpm"]] + g.leak_lpm + q_door
        q_total = row[COL["n2_lpm"]] + row[COL["o2_lpm"]] + row[COL["co2_lpm"]] + room
        if q_total > 0.0:
            c_inf = (room * X_AIR_CO2 + row[COL["co2_lpm"]]) / q_total
            c = c_inf + (c - c_inf) * math.exp(-q_total * dt / 60.0 / g.volume_l)
        out.append(100.0 * c)
    return out


def ideal_co2_refill_pct(r: TwinResult, c0: float, i_close: int) -> list[float]:
    """Chamber CO2 (%) after the door: CO2 at its maximum with the run's own other flows, held at
    the set point once reached."""
    v = r.vessel
    g, dt = v.gas, v.control_period_s
    sp = CO2_PCT / 100.0
    c, out = c0, []
    for row in r.rows[i_close + 1 :]:
        room = row[COL["air_lpm"]] + g.leak_lpm
        q_c = g.co2_max_lpm
        q_total = row[COL["n2_lpm"]] + row[COL["o2_lpm"]] + q_c + room
        if c < sp:
            c_inf = (room * X_AIR_CO2 + q_c) / q_total
            c = min(c_inf + (c - c_inf) * math.exp(-q_total * dt / 60.0 / g.volume_l), sp)
        out.append(100.0 * c)
    return out


def _travel_metrics(
    r: TwinResult, commands: list[tuple[float, float]], door: DoorOpening, m: dict[str, Any]
) -> None:
    """MFC travel (sum of |change of set point| per hour) of N2 and CO2 over the steady window."""
    dt = r.vessel.control_period_s
    first = round((door.at_s - STEADY_S) / dt)
    last = round(door.at_s / dt)
    window = commands[first:last]
    hours = len(window) * dt / 3600.0
    for k, name in ((0, "n2"), (1, "co2")):
        values = [c[k] for c in window]
        travel = sum(abs(b - a) for a, b in itertools.pairwise(values))
        m[f"{name}_travel_lpm_per_h"] = travel / hours if hours > 0 else None
        m[f"{name}_cmd_mean_lpm"] = statistics.fmean(values) if values else None
        m[f"{name}_cmd_sd_lpm"] = statistics.pstdev(values) if values else None
