"""Gas-cylinder forecast: when will each supply run out, and is that before the run ends?

Pure functions on injected times (s since the run started); no clock, no I/O.

The remaining recipe becomes a list of :class:`Segment` s with constant flows, from the closed
forms of :mod:`controller.core.process` (docs/physics.md §B1, docs/control.md §D3):

* a descent to a lower O2 set point: N2 at its maximum for the bang-bang time, with the CO2 that
  holds the phase's CO2 against that dilution (``bang_bang_descent_s``, ``co2_ratio_lpm``);
* an ascent: air and O2 at their maxima for ``ascent_time_s``;
* a CO2 rise: V ln((1 - c0)/(1 - c1)) litres of CO2 at the start of the phase;
* the hold: the steady N2 that balances the leak (``steady_n2_lpm``), the ratio CO2, and the
  neutral N2/air mix of a minimum through-flow; a dissolved-O2 phase holds the headspace at
  x_do + OUR/kLa;
* expected door openings (``doors_per_day``, full exchange): each costs V ln(x_a/x_sp) of N2 and
  the CO2 that refills the chamber, spread over the hold as a mean flow.

**Calibration from consumption so far.** The transients are physics (V ln x0/x1) but the steady
flows hinge on the leak, which is only estimated. The litres used so far, minus the transients the
plan put before now, divided by the plan's steady litres before now, scale the future steady
flows (per gas, clamped to 0.25-4; 1 until the plan's steady part so far reaches
``MIN_STEADY_L``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.core.process import (
    X_AIR_CO2,
    X_AIR_O2,
    ProcessModel,
    ascent_time_s,
    bang_bang_descent_s,
    co2_ratio_lpm,
    steady_n2_lpm,
)
from controller.core.recipe import Phase, PhaseEnd, Recipe

GASES = ("n2", "air", "o2", "co2")
MIN_STEADY_L = 5.0
"""Planned steady litres (per gas) needed before consumption so far rescales the forecast."""
IN_SPEC_DWELL_S = 60.0
"""Dwell in band that ends an ``in_spec`` phase, s (as the recipe engine)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of the plan with constant flows (L/min) and one-off volumes at its start (L).

    Attributes:
        phase_index: Index of the recipe phase.
        start_s: Start, s since the run started.
        duration_s: Length, s.
        flows_lpm: Mean flow per gas, L/min.
        volumes_l: Litres per gas used at the very start (fast CO2 rise).
        steady: True for holds (rescaled by calibration), False for transients.
        label: Phase name and what happens.
    """

    phase_index: int
    start_s: float
    duration_s: float
    flows_lpm: dict[str, float]
    volumes_l: dict[str, float]
    steady: bool
    label: str

    def litres(self, gas: str, until_s: float = math.inf) -> float:
        """Litres of ``gas`` this segment uses before ``until_s``."""
        if until_s < self.start_s:
            return 0.0
        span = min(until_s - self.start_s, self.duration_s)
        return self.volumes_l.get(gas, 0.0) + self.flows_lpm.get(gas, 0.0) * span / 60.0


@dataclass(frozen=True, slots=True)
class Cylinder:
    """A gas supply.

    Attributes:
        gas: ``n2``, ``air``, ``o2`` or ``co2``.
        capacity_l: Full content, litres at STP (> 0).
        content_l: Content now, litres at STP (0 .. capacity).
    """

    gas: str
    capacity_l: float
    content_l: float


@dataclass(frozen=True, slots=True)
class CylinderForecast:
    """When one cylinder runs out.

    Attributes:
        gas: Which supply.
        now_s: Time of the forecast, s since the run started.
        content_l: Content now, L.
        empty_at_s: When it runs out, s since the run started (``None``: lasts the run).
        run_end_s: Expected end of the run, s since the run started.
        needed_l: Litres the rest of the run needs.
        calibration: Factor applied to the planned steady flows (consumption so far).
    """

    gas: str
    now_s: float
    content_l: float
    empty_at_s: float | None
    run_end_s: float
    needed_l: float
    calibration: float

    @property
    def lead_time_s(self) -> float | None:
        """Time left until empty, s (``None`` if it lasts the run)."""
        return None if self.empty_at_s is None else self.empty_at_s - self.now_s


@dataclass(frozen=True, slots=True)
class CylinderAlarm:
    """A cylinder-empty warning for the operator (``severity``: warning or critical)."""

    gas: str
    severity: str
    message: str


@dataclass(frozen=True, slots=True)
class RunPosition:
    """Where a run is now.

    Attributes:
        phase_index: Current phase index (0 .. number of phases - 1).
        progress_s: Time already counted toward the current phase's duration (wall time, or
            exposure for ``exposure`` phases), s (>= 0).
        now_s: Time now, s since the run started (>= 0).
        o2_frac: Present O2 fraction (0..1).
        co2_frac: Present CO2 fraction (0..1).
        temp_c: Present temperature, degC (``None``: room temperature).
    """

    phase_index: int = 0
    progress_s: float = 0.0
    now_s: float = 0.0
    o2_frac: float = X_AIR_O2
    co2_frac: float = X_AIR_CO2
    temp_c: float | None = None


START = RunPosition()
"""A run that has not started: room air, room temperature, phase 0."""


@dataclass(slots=True)
class _Plan:
    """Where the plan is (O2 and CO2 fractions, temperature, time) and what it has so far."""

    o2: float
    co2: float
    temp_c: float
    t_s: float
    out: list[Segment] = field(default_factory=list)

    def add(
        self,
        index: int,
        duration_s: float,
        flows: dict[str, float],
        label: str,
        *,
        steady: bool,
        volumes: dict[str, float] | None = None,
    ) -> None:
        if duration_s > 0.0 or volumes:
            self.out.append(
                Segment(index, self.t_s, duration_s, flows, volumes or {}, steady, label)
            )
            self.t_s += duration_s


def _hold_flows(model: ProcessModel, x: float | None, c: float) -> dict[str, float]:
    """Steady flows holding O2 ``x`` (None: uncontrolled) and CO2 ``c`` against the leak."""
    n2 = air = 0.0
    q_c = co2_ratio_lpm(c, 0.0, model.leak_lpm)
    if x is not None:
        for _ in range(30):  # N2 and ratio CO2 depend on each other; converges in a few rounds
            n2 = steady_n2_lpm(model, x, q_c)
            q_c = co2_ratio_lpm(c, n2, model.leak_lpm)
        short = model.min_through_flow_lpm - (n2 + q_c)
        if short > 0.0 and x <= X_AIR_O2:  # neutral N2/air mix tops the overlay up
            air, n2 = short * x / X_AIR_O2, n2 + short * (1.0 - x / X_AIR_O2)
            q_c = co2_ratio_lpm(c, n2 + air, model.leak_lpm)
    return {"n2": n2, "air": air, "co2": min(q_c, model.co2_max_lpm)}


def _headspace_target(model: ProcessModel, phase: Phase) -> float | None:
    """Gas O2 the phase holds: its set point, or for DO phases x_do + OUR/kLa."""
    x = phase.o2_frac
    if x is None or phase.o2_basis == "gas" or model.liquid is None:
        return x
    lq = model.liquid
    our_frac_per_h = lq.our_um_per_h / (lq.henry_um_per_mmhg * 760.0)
    return min(x + our_frac_per_h / lq.kla_per_h, 0.6)


def _ascent_s(model: ProcessModel, x0: float, x1: float) -> float:
    t = ascent_time_s(model.volume_l, model.air_max_lpm, model.o2_max_lpm, model.leak_lpm, x0, x1)
    return t if math.isfinite(t) else 0.0


def _in_spec_length_s(model: ProcessModel, phase: Phase, plan: _Plan, x: float | None) -> float:
    """Expected length of an ``in_spec`` phase: its slowest transition plus the dwell."""
    slowest = 0.0
    if phase.temp_c is not None and phase.temp_c > plan.temp_c:
        t_inf = model.room_temp_c + model.heater_max_w / model.ua_w_per_k
        tau = model.heat_capacity_j_per_k / model.ua_w_per_k
        if t_inf > phase.temp_c:
            slowest = tau * math.log((t_inf - plan.temp_c) / (t_inf - phase.temp_c))
    if x is not None and x > plan.o2:
        slowest = max(slowest, _ascent_s(model, plan.o2, x - phase.o2_band_pct / 100.0))
    return min(slowest + IN_SPEC_DWELL_S, phase.duration_h * 3600.0)


def plan_segments(
    model: ProcessModel, recipe: Recipe, at: RunPosition = START, doors_per_day: float = 0.0
) -> list[Segment]:
    """Gas plan from position ``at`` to the end of ``recipe``.

    Args:
        model: The controller's process model.
        recipe: The recipe being run.
        at: Where the run is (default: not started).
        doors_per_day: Expected door openings per day with full exchange (>= 0).
    """
    temp = model.room_temp_c if at.temp_c is None else at.temp_c
    start_index, progress_s = at.phase_index, at.progress_s
    plan = _Plan(at.o2_frac, at.co2_frac, temp, at.now_s)
    for index in range(start_index, len(recipe.phases)):
        phase = recipe.phases[index]
        done = progress_s if index == start_index else 0.0
        x = _headspace_target(model, phase)
        c = (phase.co2_pct or 0.0) / 100.0 if phase.co2_pct is not None else plan.co2
        if c > plan.co2 + 1e-6:
            rise = {"co2": model.volume_l * math.log((1.0 - plan.co2) / (1.0 - c))}
            plan.add(index, 0.0, {}, f"{phase.name}: CO2 rise", steady=False, volumes=rise)
        moving_s = 0.0
        band = phase.o2_band_pct / 100.0
        if x is not None and plan.o2 - x > band:
            t_bb = bang_bang_descent_s(model, plan.o2, x, c)
            moving_s = t_bb if math.isfinite(t_bb) else 0.0
            q_c = min(co2_ratio_lpm(c, model.n2_max_lpm, model.leak_lpm), model.co2_max_lpm)
            flows = {"n2": model.n2_max_lpm, "co2": q_c}
            plan.add(index, moving_s, flows, f"{phase.name}: N2 purge", steady=False)
        elif x is not None and x - plan.o2 > band:
            moving_s = _ascent_s(model, plan.o2, x)
            flows = {"air": model.air_max_lpm, "o2": model.o2_max_lpm}
            plan.add(index, moving_s, flows, f"{phase.name}: O2 rise", steady=False)
        if phase.until is PhaseEnd.IN_SPEC:
            remaining = _in_spec_length_s(model, phase, plan, x) - done - moving_s
        elif phase.until is PhaseEnd.EXPOSURE:  # exposure counts once in band: the move adds
            remaining = phase.duration_h * 3600.0 - done
        else:
            remaining = phase.duration_h * 3600.0 - done - moving_s
        flows = _hold_flows(model, x, c)
        if doors_per_day > 0.0 and x is not None:
            per_min = doors_per_day / 1440.0
            flows["n2"] += per_min * model.volume_l * math.log(X_AIR_O2 / max(x, 1e-6))
            flows["co2"] += per_min * model.volume_l * math.log(1.0 / (1.0 - c))
        plan.add(index, max(remaining, 0.0), flows, f"{phase.name}: hold", steady=True)
        plan.o2 = x if x is not None else X_AIR_O2 if model.leak_lpm > 0 else plan.o2
        plan.co2 = c
        plan.temp_c = phase.temp_c if phase.temp_c is not None else plan.temp_c
    return plan.out


def _calibration(
    past: list[Segment],
    gas: str,
    used_l: float,
    phase_index: int,
    progress_s: float,
    exposure_phase: bool,
) -> float:
    """Actual / planned steady use so far for ``gas`` (1 when too little is known)."""
    transient = steady = 0.0
    phase_start = next((seg.start_s for seg in past if seg.phase_index == phase_index), 0.0)
    for seg in past:
        if seg.phase_index > phase_index:
            break
        if not seg.steady:
            transient += seg.litres(gas)
        elif seg.phase_index < phase_index:
            steady += seg.litres(gas)
        else:  # the current hold, up to the progress made in it
            moved = 0.0 if exposure_phase else seg.start_s - phase_start
            steady += seg.litres(gas, seg.start_s + max(progress_s - moved, 0.0))
    if steady < MIN_STEADY_L:
        return 1.0
    return min(max((used_l - transient) / steady, 0.25), 4.0)


def forecast_cylinders(
    model: ProcessModel,
    recipe: Recipe,
    cylinders: list[Cylinder],
    at: RunPosition,
    used_l: dict[str, float],
    doors_per_day: float = 0.0,
) -> list[CylinderForecast]:
    """Forecast when each cylinder runs out, from what was used so far and what is left to do.

    Args:
        model: The controller's process model.
        recipe: The recipe being run.
        cylinders: Supplies to forecast.
        at: Where the run is now.
        used_l: Litres per gas used since the run started.
        doors_per_day: Expected door openings per day.
    """
    past = plan_segments(model, recipe, START, doors_per_day)
    future = plan_segments(model, recipe, at, doors_per_day)
    now_s, phase_index, progress_s = at.now_s, at.phase_index, at.progress_s
    run_end = future[-1].start_s + future[-1].duration_s if future else now_s
    exposure = recipe.phases[phase_index].until is PhaseEnd.EXPOSURE
    out = []
    for cyl in cylinders:
        used = used_l.get(cyl.gas, 0.0)
        factor = _calibration(past, cyl.gas, used, phase_index, progress_s, exposure)
        left, empty_at, needed = cyl.content_l, None, 0.0
        for seg in future:
            scale = factor if seg.steady else 1.0
            volume = seg.volumes_l.get(cyl.gas, 0.0) * scale
            rate_l_per_s = seg.flows_lpm.get(cyl.gas, 0.0) * scale / 60.0
            total = volume + rate_l_per_s * seg.duration_s
            if empty_at is None and needed + total >= left:
                short = left - needed - volume
                empty_at = seg.start_s + (max(short, 0.0) / rate_l_per_s if short > 0 else 0.0)
            needed += total
        out.append(
            CylinderForecast(cyl.gas, now_s, cyl.content_l, empty_at, run_end, needed, factor)
        )
    return out


def _hours(t_s: float) -> str:
    return f"{t_s / 3600.0:.1f} h"


def cylinder_alarms(
    forecasts: list[CylinderForecast], critical_lead_s: float = 3600.0
) -> list[CylinderAlarm]:
    """Alarms for every cylinder that runs out before the run ends.

    Args:
        forecasts: From :func:`forecast_cylinders`.
        critical_lead_s: Lead time at or below which the alarm is critical, s.
    """
    alarms = []
    for f in forecasts:
        if f.empty_at_s is None or f.lead_time_s is None:
            continue
        severity = "critical" if f.lead_time_s <= critical_lead_s else "warning"
        message = (
            f"cylinder {f.gas.upper()} will run out at t={_hours(f.empty_at_s)} before the run "
            f"ends at {_hours(f.run_end_s)}; lead time {_hours(f.lead_time_s)} "
            f"(needs {f.needed_l:.0f} L, holds {f.content_l:.0f} L)"
        )
        alarms.append(CylinderAlarm(f.gas, severity, message))
    return alarms
