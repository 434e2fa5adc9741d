"""Where a reactor's run stands, for people: ``hypoxia ctl status`` and the operator page.

Read-only views of a :class:`~controller.service.runner.ReactorRunner`'s live state (its last
snapshot, recipe engine, exposure clock and alarms), as JSON-ready dicts: readings against set
point and band, the phase's progress, each harvest's exposure clock with its expected due time,
and the alarms an operator must see. Nothing here changes the runner.

Times: ``*_s`` are seconds since the run started (the service's clock, simulated when
``--speed`` is not 1), ``*_utc`` ISO timestamps of the same clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.core.recipe import Phase, PhaseEnd

if TYPE_CHECKING:
    from controller.service.runner import ReactorRunner

PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
"""Sort order of alarms: most urgent first."""

HIDDEN_ALARM_STATES = ("normal", "suppressed")
"""ISA-18.2 states an operator need not see."""

_VARIABLES = (
    # key, reading role, unit, set point attribute, band attribute
    ("o2", "o2", "%", "o2_pct", "o2_band_pct"),
    ("co2", "co2", "%", "co2_pct", "co2_band_pct"),
    ("temp", "temperature", "°C", "temp_c", "temp_band_c"),
)


def _utc(started: datetime | None, t_s: float | None) -> str | None:
    if started is None or t_s is None:
        return None
    return (started + timedelta(seconds=t_s)).isoformat()


def values(runner: ReactorRunner) -> dict[str, dict[str, Any]]:
    """O2, CO2, temperature (and DO when present): value, quality, set point, band, in band.

    A reactor with ``[reactors.culture]`` also shows ``cells``: the estimated pericellular O2
    against the gas O2 set point and band (quality ``estimate``; docs/physics.md §B7).
    """
    phase = runner.phase
    readings = runner.snapshot.readings
    out: dict[str, dict[str, Any]] = {}
    for key, role, unit, sp_attr, band_attr in _VARIABLES:
        reading = readings.get(role, {})
        sp = getattr(phase, sp_attr) if phase is not None else None
        if key == "o2" and phase is not None and phase.o2_basis == "dissolved":
            sp = None  # the O2 set point is a DO set point: shown on DO
        band = getattr(phase, band_attr) if phase is not None and sp is not None else None
        out[key] = _value(reading, unit, sp, band)
    if "do" in readings:
        dissolved = phase is not None and phase.o2_basis == "dissolved"
        sp = phase.o2_pct if dissolved and phase is not None else None
        band = phase.o2_band_pct if dissolved and phase is not None else None
        out["do"] = _value(readings["do"], "%", sp, band)
    if runner.cells is not None:
        gas = phase is not None and phase.o2_basis == "gas" and phase.o2_pct is not None
        estimate = runner.snapshot.pericellular_o2_pct
        out["cells"] = _value(
            {
                "value": estimate,
                "quality": "estimate" if estimate is not None else "untrusted",
                "reason": "" if estimate is not None else "no trusted headspace O2 reading",
            },
            "%",
            phase.o2_pct if gas and phase is not None else None,
            phase.o2_band_pct if gas and phase is not None else None,
        )
    return out


def _value(
    reading: dict[str, Any], unit: str, sp: float | None, band: float | None
) -> dict[str, Any]:
    value = reading.get("value")
    in_band = None
    if value is not None and sp is not None and band is not None:
        in_band = abs(value - sp) <= band + 1e-9
    return {
        "value": value,
        "unit": unit,
        "quality": reading.get("quality"),
        "reason": reading.get("reason", ""),
        "sp": sp,
        "band": band,
        "in_band": in_band,
    }


def phase_progress(runner: ReactorRunner) -> dict[str, Any]:
    """The current phase: name, position in the recipe, state and progress toward its end."""
    engine, recipe = runner.engine, runner.recipe
    if engine is None or recipe is None:
        return {"name": None, "index": None, "count": 0, "state": "idle"}
    phase: Phase | None = engine.phase
    count = len(recipe.phases)
    if phase is None:
        return {"name": None, "index": count, "count": count, "state": engine.state.value}
    t = runner.snapshot.run_t_s
    elapsed = max(0.0, t - engine.phase_start_s)
    exposure = engine.clock.exposure_s if engine.clock else 0.0
    basis = phase.until.value
    done = exposure if phase.until is PhaseEnd.EXPOSURE else elapsed
    max_s = (phase.max_duration_h or phase.duration_h) * 3600.0
    return {
        "name": phase.name,
        "index": engine.index,
        "count": count,
        "state": engine.state.value,
        "basis": basis,
        "elapsed_s": elapsed,
        "done_s": done,
        "target_s": phase.duration_h * 3600.0,
        "max_s": max_s if phase.until is not PhaseEnd.TIME else None,
        "names": [p.name for p in recipe.phases],
    }


def harvests(runner: ReactorRunner) -> list[dict[str, Any]]:
    """Every harvest of the recipe with its state and exposure clock.

    ``state``: ``planned`` (a later phase), ``counting`` (its phase runs: exposure accrues),
    ``due`` (released, awaiting confirmation), ``overdue`` (released longer than the site's
    ``harvest_overdue_s``), ``done``, or ``missed`` (its phase ended without releasing it).
    ``due_utc`` assumes O2 stays in band from now on.
    """
    engine, recipe, run = runner.engine, runner.recipe, runner.run
    if engine is None or recipe is None:
        return []
    started = run.started_utc if run else None
    t = runner.snapshot.run_t_s
    released = {h.name: h for h in engine.harvests}
    exposure = engine.clock.exposure_s if engine.clock else 0.0
    overdue_s = runner.config.limits.harvest_overdue_s
    out: list[dict[str, Any]] = []
    for index, phase in enumerate(recipe.phases):
        for harvest in phase.harvests:
            target = harvest.at_exposure_h * 3600.0
            item: dict[str, Any] = {
                "name": harvest.name,
                "phase": phase.name,
                "action": harvest.action.value,
                "target_s": target,
                "exposure_s": None,
                "remaining_s": None,
                "due_utc": None,
                "latest_utc": None,
                "released_utc": None,
                "done_utc": None,
                "forced": False,
            }
            record = released.get(harvest.name)
            if record is not None:
                waiting = harvest.name in engine.pending
                late = waiting and t - record.at_s >= overdue_s
                item.update(
                    state="overdue" if late else "due" if waiting else "done",
                    exposure_s=record.exposure_s,
                    remaining_s=0.0,
                    released_utc=_utc(started, record.at_s),
                    done_utc=_utc(started, record.done_s),
                    forced=record.forced_by_latest,
                )
            elif index < engine.index or engine.finished:
                item["state"] = "missed"
            elif index == engine.index:
                remaining = max(0.0, target - exposure)
                latest = (
                    engine.phase_start_s + harvest.latest_h * 3600.0 if harvest.latest_h else None
                )
                item.update(
                    state="counting",
                    exposure_s=exposure,
                    remaining_s=remaining,
                    due_utc=_utc(started, t + remaining),
                    latest_utc=_utc(started, latest),
                )
            else:
                item["state"] = "planned"
            out.append(item)
    return out


def next_harvest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The harvest that needs attention first: released and waiting, else the next counting."""
    for state in ("overdue", "due", "counting"):
        found = next((h for h in items if h["state"] == state), None)
        if found is not None:
            return found
    return None


def alarms(runner: ReactorRunner) -> list[dict[str, Any]]:
    """Alarms an operator must see (not normal, not suppressed), most urgent first."""
    shown = [
        {"name": name, **state}
        for name, state in runner.alarms.snapshot().items()
        if state["state"] not in HIDDEN_ALARM_STATES
    ]
    shown.sort(key=lambda a: (PRIORITY_RANK.get(a["priority"], 9), a["name"]))
    return shown


def reactor_overview(runner: ReactorRunner) -> dict[str, Any]:
    """Everything ``ctl status`` and the operator page show of one reactor."""
    run, snap = runner.run, runner.snapshot
    items = harvests(runner)
    return {
        "reactor": runner.config.id,
        "name": runner.config.name or runner.config.id,
        "run_id": run.run_id if run else None,
        "recipe": run.recipe_name if run else None,
        "started_utc": run.started_utc.isoformat() if run else None,
        "finished": runner.finished,
        "t_s": snap.run_t_s,
        "utc": snap.utc or None,
        "period_s": runner.period_s,
        "time_scale": float(getattr(runner.clock, "speed", 1.0)),
        "phase": phase_progress(runner),
        "values": values(runner),
        "outputs": dict(snap.actuation),
        "exposure_s": snap.exposure_s,
        "harvests": items,
        "next_harvest": next_harvest(items),
        "alarms": alarms(runner),
    }
