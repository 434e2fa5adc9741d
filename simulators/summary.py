"""Run summary of a twin run: how fast and how tightly O2 was brought and held, harvests, gas.

Definitions (docs/recipes.md, "What the summary measures"):

* The *first hypoxic ramp* starts with the first phase whose gas O2 set point lies below the O2
  present at its start by more than the metric band (+/- 0.1 % abs).
* ``time_to_band_s``: from that start until the *measured* O2 enters +/- 0.1 % abs of the set point
  and stays inside for ``SETTLE_S`` (or until the phase ends or a door opens, if sooner).
* ``bang_bang_min_s``: the physical minimum for the same transition, from the true O2 at the start
  to the band edge, with the vessel's maximum N2 flow, the CO2 flow needed to hold the phase's CO2
  and the leak (controller.core.process.bang_bang_descent_s), computed on the plant's true
  parameters.
* ``undershoot_pct``: how far the *chamber* (true) O2 fell below the set point during the ramp and
  the settle window; a noisy sensor's minimum is not an undershoot (the measured figure is
  reported too, as ``undershoot_measured_pct``).
* ``steady_2sigma_pct`` / ``steady_mean_error_pct``: of the measured O2, from the end of the settle
  window to the end of the phase or the first door opening.
* per harvest, beside the chamber's window statistics (``in_band_s`` added): ``cells_in_band_s``,
  ``cells_o2_mean_pct``, ``cells_dose_error_pct_h``, ``cells_window_s``, ``cells_excursions``,
  ``cells_excursion_s`` -- the same ExposureClock rules (band, debounce, windows cut at each
  harvest) driven with the twin's pericellular O2 trajectory instead of the measured chamber O2
  (``None`` without a culture model or for a dissolved-O2 phase); the same keys and rule as the
  service's ``RecipeEngine(track_cells=True)`` (controller/core/exposure.py ``cells_stats``).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from controller.core.exposure import CELLS_KEYS, ExposureClock, cells_stats
from controller.core.process import bang_bang_descent_s
from controller.core.recipe import Phase
from simulators.twin import TwinResult

METRIC_BAND_PCT = 0.1
"""Band of the O2 performance metrics, % abs (the commercial +/- 0.1 % specification)."""
SETTLE_S = 1800.0
"""How long O2 must stay in the metric band for the entry to count as settled, s."""


def _first_hypoxic_ramp(result: TwinResult) -> tuple[int, Phase, int] | None:
    """(phase index, phase, trace index at its start) of the first hypoxic ramp."""
    trace = result.trace
    for ev in result.events:
        if ev.kind != "phase_start":
            continue
        index = int(ev.detail["index"])
        phase = result.recipe.phases[index]
        if phase.o2_pct is None or phase.o2_basis != "gas":
            continue
        i0 = _index_at(trace.t_s, ev.t_s)
        if trace.o2_true_pct[i0] - phase.o2_pct > METRIC_BAND_PCT:
            return index, phase, i0
    return None


def _index_at(times: Any, t_s: float) -> int:
    lo, hi = 0, len(times) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < t_s - 1e-9:
            lo = mid + 1
        else:
            hi = mid
    return lo


def o2_metrics(result: TwinResult) -> dict[str, Any]:
    """The ``o2`` block of ``summary.json`` (``None`` values when there is no hypoxic ramp)."""
    found = _first_hypoxic_ramp(result)
    empty: dict[str, Any] = dict.fromkeys(
        ("time_to_band_s", "bang_bang_min_s", "ratio", "undershoot_pct", "steady_2sigma_pct")
    )
    if found is None:
        return empty
    index, phase, i0 = found
    tr = result.trace
    sp = phase.o2_pct if phase.o2_pct is not None else math.nan
    t0 = tr.t_s[i0]
    end = i0
    while end + 1 < len(tr.t_s) and tr.phase[end + 1] == index and not tr.door[end + 1]:
        end += 1
    entry = _settled_entry(tr.t_s, tr.o2_pct, i0, end, sp)
    model = result.vessel.process_model()
    x0 = tr.o2_true_pct[i0] / 100.0
    co2 = (phase.co2_pct or 0.0) / 100.0
    t_bb = bang_bang_descent_s(model, x0, (sp + METRIC_BAND_PCT) / 100.0, co2)
    out: dict[str, Any] = {
        "phase": phase.name,
        "setpoint_pct": sp,
        "band_pct": METRIC_BAND_PCT,
        "ramp_start_s": t0,
        "start_pct": 100.0 * x0,
        "bang_bang_min_s": t_bb,
        "time_to_band_s": None,
        "ratio": None,
        "undershoot_pct": None,
        "undershoot_measured_pct": None,
        "steady_2sigma_pct": None,
        "steady_mean_error_pct": None,
        "steady_window_s": 0.0,
    }
    if entry is None:
        return out
    t_in = tr.t_s[entry] - t0
    out["time_to_band_s"] = t_in
    out["ratio"] = t_in / t_bb if t_bb > 0 and math.isfinite(t_bb) else None
    settle_end = min(end, _index_at(tr.t_s, tr.t_s[entry] + SETTLE_S))
    window = range(i0, settle_end + 1)
    out["undershoot_pct"] = max(0.0, sp - min(tr.o2_true_pct[i] for i in window))
    out["undershoot_measured_pct"] = max(0.0, sp - min(tr.o2_pct[i] for i in window))
    steady = [tr.o2_pct[i] for i in range(settle_end, end + 1) if not math.isnan(tr.o2_pct[i])]
    if len(steady) > 10:
        out["steady_2sigma_pct"] = 2.0 * statistics.pstdev(steady)
        out["steady_mean_error_pct"] = statistics.fmean(steady) - sp
        out["steady_window_s"] = tr.t_s[end] - tr.t_s[settle_end]
    return out


def _settled_entry(times: Any, values: Any, start: int, end: int, sp: float) -> int | None:
    """Index of the band entry after which the value stays in band for SETTLE_S (or to ``end``)."""
    entry: int | None = None
    for i in range(start, end + 1):
        if abs(values[i] - sp) <= METRIC_BAND_PCT + 1e-9:
            if entry is None:
                entry = i
            if times[i] - times[entry] >= SETTLE_S:
                return entry
        else:
            entry = None
    return entry


def cells_harvest_metrics(result: TwinResult) -> dict[str, dict[str, Any]]:
    """Cells-side statistics of every harvest window, by harvest name.

    The same rule as the service's (``RecipeEngine(track_cells=True)`` fed each cycle with the
    latest pericellular value): each control period is credited with the value in force at its
    end, so a culture sample taken at s_k stands for the periods ending in [s_k, s_k+1), i.e.
    the interval (s_k - dt, s_k+1 - dt]. A fresh :class:`ExposureClock` per gas-basis O2 phase;
    windows are cut at the harvests' release times. Computed after the run from the trace, so the
    twin's loop pays nothing for it.
    """
    tr = result.trace
    if result.vessel.culture is None or len(tr.cells_t_s) < 2:
        return {}
    starts = [(ev.t_s, int(ev.detail["index"])) for ev in result.events if ev.kind == "phase_start"]
    out: dict[str, dict[str, Any]] = {}
    dt = result.vessel.control_period_s
    # piece k: value k up to (the period before) the next sample; the last one to the end
    times = [t - dt for t in tr.cells_t_s[1:]] + [math.inf]
    values = tr.cells_o2_pct
    for n, (start, index) in enumerate(starts):
        phase = result.recipe.phases[index]
        if phase.o2_pct is None or phase.o2_basis != "gas":
            continue
        end = starts[n + 1][0] if n + 1 < len(starts) else result.duration_s
        clock = ExposureClock(phase.o2_pct, phase.o2_band_pct, result.engine.debounce_s)
        cuts = sorted(
            (h.at_s, h.name)
            for h in result.engine.harvests
            if h.phase == phase.name and start < h.at_s <= end + 1e-9
        )
        k = _index_at(times, start + 1e-9)
        a = start
        while k < len(times) and a < end - 1e-9:
            b, v = min(times[k], end), values[k]
            while cuts and cuts[0][0] < b - 1e-9:
                c, name = cuts.pop(0)
                if c > a:
                    clock.sample(c, c - a, v)
                    a = c
                out[name] = cells_stats(clock.cut(c))
            if b > a:
                clock.sample(b, b - a, v)
                a = b
            while cuts and cuts[0][0] <= b + 1e-9:
                c, name = cuts.pop(0)
                out[name] = cells_stats(clock.cut(c))
            k += 1
        for c, name in cuts:  # a harvest after the last culture sample: hold the last value
            if c > a:
                clock.sample(c, c - a, values[-1])
                a = c
            out[name] = cells_stats(clock.cut(c))
    return out


def _harvest(h: Any, cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = h.as_dict()
    window = float(d.get("window_s", 0.0))
    frac = d.get("in_band_frac")
    d["in_band_s"] = float(frac) * window if window > 0 and frac is not None else 0.0
    d.update(cells.get(h.name, dict.fromkeys(CELLS_KEYS)))
    return d


def summarize(result: TwinResult) -> dict[str, Any]:
    """The whole ``summary.json`` document."""
    plant = result.plant
    phases = [
        {
            "name": ev.detail["phase"],
            "ended_s": ev.t_s,
            "elapsed_s": ev.detail["elapsed_s"],
            "exposure_s": ev.detail["exposure_s"],
        }
        for ev in result.events
        if ev.kind == "phase_end"
    ]
    timeouts = [ev.detail.get("phase") for ev in result.events if ev.kind == "phase_timeout"]
    cells = cells_harvest_metrics(result)
    return {
        "recipe": result.recipe.name,
        "vessel": result.vessel.name,
        "seed": result.seed,
        "duration_s": result.duration_s,
        "completed": result.finished,
        "control_period_s": result.vessel.control_period_s,
        "o2": o2_metrics(result),
        "harvests": [_harvest(h, cells) for h in result.engine.harvests],
        "phases": phases,
        "phase_timeouts": timeouts,
        "doors": [{"at_s": d.at_s, "duration_s": d.duration_s} for d in result.doors],
        "gas_l": {k: round(v, 3) for k, v in plant.state.gas_used_l.items()},
    }
