"""Phases and harvests of a record from the recipe and the run's events (service or twin alike).

Events are dicts as the journal returns them (``t_s``, ``kind`` and the event's detail keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.core.recipe import Phase, PhaseEnd, Recipe
from records.analysis import Band, Excursion, Window
from records.model import BatchRecord, Confirmation, HarvestRow, PhaseRow


def _band(value: float | None, band: float, unit: str, label: str) -> str | None:
    if value is None:
        return None
    return f"{label} {value:g} ± {band:g} {unit}"


def targets(phase: Phase) -> str:
    """``O2 5 ± 0.3 %, CO2 5 ± 1 %, 37 ± 0.5 °C`` (uncontrolled variables left out)."""
    o2_label = "DO" if phase.o2_basis == "dissolved" else "O2"
    parts = [
        _band(phase.o2_pct, phase.o2_band_pct, "%", o2_label),
        _band(phase.co2_pct, phase.co2_band_pct, "%", "CO2"),
        _band(phase.temp_c, phase.temp_band_c, "°C", "T"),
    ]
    return ", ".join(p for p in parts if p) or "nothing controlled"


def end_rule(phase: Phase) -> str:
    """How the phase ends, in words."""
    hours = f"{phase.duration_h:g} h"
    if phase.until is PhaseEnd.EXPOSURE:
        cap = f" (at most {phase.max_duration_h:g} h)" if phase.max_duration_h else ""
        return f"{hours} of in-band exposure{cap}"
    if phase.until is PhaseEnd.IN_SPEC:
        return f"all in band for 60 s (time-out {hours})"
    return f"{hours} of time"


def bands(recipe: Recipe) -> dict[str, Band]:
    """The exposure band of every phase with an O2 (or DO) set point."""
    return {p.name: Band(p.o2_pct, p.o2_band_pct) for p in recipe.phases if p.o2_pct is not None}


def phase_rows(
    recipe: Recipe, events: Sequence[dict[str, Any]], last_s: float, status: str, state: str
) -> list[PhaseRow]:
    """Every recipe phase: planned start and length, and as run (from phase events).

    Args:
        recipe: The recipe as run.
        events: The run's events in order.
        last_s: Run time of the last cycle, s (the end of a phase still running).
        status: The run's status (``active``, ``complete``, ``stopped``, ``aborted``).
        state: The engine's phase state now (``running``, ``held`` ...), for a running phase.
    """
    rows: list[PhaseRow] = []
    planned = 0.0
    for i, p in enumerate(recipe.phases):
        length = p.duration_h * 3600.0
        rows.append(
            PhaseRow(i, p.name, targets(p), end_rule(p), planned if planned >= 0 else None, length)
        )
        # an exposure phase's length is only a lower bound: later planned starts are unknown
        planned = planned + length if p.until is PhaseEnd.TIME and planned >= 0 else -1.0
    by_name = {r.name: r for r in rows}
    for ev in events:
        row = by_name.get(str(ev.get("phase")))
        if row is None:
            continue
        if ev["kind"] == "phase_start":
            row.started_s, row.outcome = float(ev["t_s"]), "running"
        elif ev["kind"] == "phase_end":
            row.ended_s = float(ev["t_s"])
            row.exposure_s = ev.get("exposure_s")
            row.outcome = "timed out" if row.outcome == "timed out" else "complete"
        elif ev["kind"] == "phase_timeout":
            row.outcome = "timed out"
        elif ev["kind"] in ("run_stopped", "run_aborted"):
            row.ended_s, row.outcome = float(ev["t_s"]), ev["kind"].removeprefix("run_")
    for row in rows:
        if row.started_s is not None and row.ended_s is None:
            row.ended_s = last_s
            row.outcome = state if status == "active" else status
    return rows


def harvest_rows(recipe: Recipe, events: Sequence[dict[str, Any]]) -> list[HarvestRow]:
    """Every recipe harvest, its ``harvest_due`` statistics and ``harvest_done`` confirmation."""
    rows: dict[str, HarvestRow] = {}
    for p in recipe.phases:
        for h in p.harvests:
            rows[h.name] = HarvestRow(
                h.name,
                p.name,
                h.action.value,
                h.at_exposure_h * 3600.0,
                h.latest_h * 3600.0 if h.latest_h is not None else None,
                p.o2_pct,
                p.o2_band_pct if p.o2_pct is not None else None,
            )
    volumes = {h.name: h.volume_ml for p in recipe.phases for h in p.harvests}
    for ev in events:
        if ev["kind"] == "harvest_due" and ev.get("name") in rows:
            row = rows[str(ev["name"])]
            row.released = True
            row.at_s = float(ev["at_s"])
            row.opened_s = _num(ev.get("opened_s"))
            row.window_s = _num(ev.get("window_s"))
            row.exposure_s = _num(ev.get("exposure_s"))
            row.in_band_frac = _num(ev.get("in_band_frac"))
            row.o2_mean_pct = _num(ev.get("o2_mean_pct"))
            row.dose_error_pct_h = _num(ev.get("dose_error_pct_h"))
            row.excursions_journal = int(ev.get("excursions") or 0)
            row.excursion_s_journal = _num(ev.get("excursion_s"))
            row.forced = bool(ev.get("forced_by_latest"))
            cells_side(row, ev)
        elif ev["kind"] == "harvest_done" and ev.get("harvest") in rows:
            name = str(ev["harvest"])
            volume = _num(ev.get("volume_ml"))
            if volume is None and ev.get("by") == "pump":
                volume = volumes.get(name)
            rows[name].confirmation = Confirmation(
                str(ev.get("by", "")), float(ev["t_s"]), volume, str(ev.get("container") or "")
            )
    return list(rows.values())


def cells_side(row: HarvestRow, stats: dict[str, Any]) -> None:
    """Copy a harvest's cells-side statistics (``cells_*`` keys) onto its row, where present.

    The service journals them in ``harvest_due`` (``RecipeEngine(track_cells=True)``); the twin
    computes them in its summary (``simulators/summary.py``): the same keys and rules.
    """
    if stats.get("cells_window_s") is None:
        return
    row.cells_window_s = _num(stats.get("cells_window_s"))
    row.cells_in_band_s = _num(stats.get("cells_in_band_s"))
    row.cells_o2_mean_pct = _num(stats.get("cells_o2_mean_pct"))
    row.cells_dose_error_pct_h = _num(stats.get("cells_dose_error_pct_h"))
    excursions = stats.get("cells_excursions")
    row.cells_excursions = int(excursions) if excursions is not None else None
    row.cells_excursion_s = _num(stats.get("cells_excursion_s"))


def windows(harvests: Sequence[HarvestRow]) -> list[Window]:
    """The journaled exposure window of every released harvest."""
    return [
        Window(h.name, h.phase, h.opened_s, h.at_s)
        for h in harvests
        if h.released and h.opened_s is not None and h.at_s is not None
    ]


def attach_excursions(
    harvests: Sequence[HarvestRow], excursions: Sequence[Excursion]
) -> tuple[list[Excursion], list[str]]:
    """Put each excursion on its harvest; return those of the open window and discrepancies."""
    by_name = {h.name: h for h in harvests}
    rest: list[Excursion] = []
    for exc in excursions:
        row = by_name.get(exc.harvest or "")
        if row is None:
            rest.append(exc)
        else:
            row.excursions.append(exc)
    notes = []
    for h in harvests:
        if h.released and h.excursions_journal is not None:
            found = len(h.excursions)
            if found != h.excursions_journal:
                notes.append(
                    f"harvest {h.name}: the journal counted {h.excursions_journal} excursion(s), "
                    f"the recorded telemetry shows {found} (telemetry missing or resampled?)"
                )
    return rest, notes


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def pericellular_means(rec: BatchRecord) -> None:
    """Each released harvest's mean of the recorded ``pericellular_o2_pct`` over its window.

    Twin runs record the plant's value, service runs the estimate of a reactor with a culture
    section; without either the mean stays ``None``.
    """
    t, peri = rec.series.get("t_s", []), rec.series.get("pericellular_o2_pct", [])
    for h in rec.harvests:
        if h.opened_s is None or h.at_s is None:
            continue
        values = [
            p
            for ts, p in zip(t, peri, strict=False)
            if ts is not None and p is not None and h.opened_s < ts <= h.at_s
        ]
        h.pericellular_mean_pct = sum(values) / len(values) if values else None
