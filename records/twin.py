"""The record of a digital-twin run (``hypoxia simulate``): the same document as a service run's.

Everything comes from the twin's result and its summary (the twin's own journal): harvest
statistics from its ``harvest_due`` events, excursions from its full-resolution trace (doors are
known here, so their cause is too), gas from the plant model's exact integral.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any

from records import analysis, assemble
from records.model import SERIES, BatchRecord, Instrument
from simulators.twin import SERIES_COLUMNS, TwinResult


def _events(result: TwinResult) -> list[dict[str, Any]]:
    events = [
        {"seq": i, "utc": "", "t_s": ev.t_s, "kind": ev.kind, **ev.detail}
        for i, ev in enumerate(result.events, start=1)
    ]
    doors = [
        {
            "seq": 0,
            "utc": "",
            "t_s": d.at_s,
            "kind": "door_open (simulated)",
            "open_s": d.duration_s,
        }
        for d in result.doors
    ]
    return sorted(events + doors, key=lambda e: (e["t_s"], e["seq"]))


def _samples(result: TwinResult) -> tuple[list[analysis.Sample], float]:
    """The exposure variable per cycle (trace), or per recorded row for DO phases; its period."""
    phases = result.recipe.phases
    dissolved = _dissolved(result)
    if dissolved:  # the full-resolution trace holds gas O2 only: use the recorded rows
        col = {c: i for i, c in enumerate(SERIES_COLUMNS)}
        rows = result.rows
        samples = [
            analysis.Sample(
                float(r[col["t_s"]]),
                _value(r[col["do_pct" if r[col["phase"]] in dissolved else "o2_pct"]]),
                str(r[col["phase"]]) or None,
            )
            for r in rows
        ]
        spacing = sorted(b.t_s - a.t_s for a, b in itertools.pairwise(samples))
        return samples, spacing[len(spacing) // 2] if spacing else result.vessel.control_period_s
    tr = result.trace
    samples = [
        analysis.Sample(
            tr.t_s[i],
            _value(tr.o2_pct[i]),
            phases[tr.phase[i]].name if 0 <= tr.phase[i] < len(phases) else None,
        )
        for i in range(len(tr.t_s))
    ]
    return samples, result.vessel.control_period_s


def _dissolved(result: TwinResult) -> set[str]:
    return {p.name for p in result.recipe.phases if p.o2_basis == "dissolved"}


def _value(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _series(result: TwinResult) -> dict[str, list[float | None]]:
    col = {c: i for i, c in enumerate(SERIES_COLUMNS)}
    band = {p.name: p.o2_band_pct for p in result.recipe.phases if p.o2_pct is not None}
    out: dict[str, list[float | None]] = {
        key: [_value(r[col[key]]) for r in result.rows] for key in SERIES if key in col
    }
    out["o2_band_pct"] = [band.get(str(r[col["phase"]])) for r in result.rows]
    return out


def twin_record(
    result: TwinResult, summary: dict[str, Any], run_name: str, recipe_text: str, sha256: str
) -> BatchRecord:
    """The record of a twin run (``run_name`` stands in for a run id)."""
    v = result.vessel
    events = _events(result)
    dt = v.control_period_s
    rec = BatchRecord(
        source="twin",
        run_id=run_name,
        site="digital twin",
        reactor=v.name,
        reactor_name=v.description,
        vessel={
            "volume": f"{v.gas.volume_l:g} L",
            "leak": f"{v.gas.leak_lpm:g} L/min",
            "N2 / air / O2 / CO2 max": (
                f"{v.gas.n2_max_lpm:g} / {v.gas.air_max_lpm:g} / {v.gas.o2_max_lpm:g} / "
                f"{v.gas.co2_max_lpm:g} L/min"
            ),
            "control period": f"{dt:g} s",
            "sensor noise seed": str(result.seed),
        },
        recipe=result.recipe,
        recipe_sha256=sha256,
        recipe_toml=recipe_text,
        status="complete" if result.finished else "did not complete (time limit)",
        provisional=False,
        started_utc=None,
        ended_utc=None,
        last_s=result.duration_s,
        period_s=dt,
        debounce_s=result.engine.debounce_s,
        generated_utc=datetime.now(UTC),
        store=f"digital twin (simulators/twin.py), summary.json of seed {result.seed}",
        events=events,
        instruments=[
            Instrument(f"simulated {name}", "twin sensor model", role, "in process", "—", "—")
            for name, role in (("O2 sensor", "o2"), ("CO2 sensor", "co2"), ("Pt100", "temperature"))
        ],
        gas_l={k: float(val) for k, val in summary.get("gas_l", {}).items()},
        gas_note="exact integral of the simulated MFC flows (the plant model's gas account)",
    )
    state = result.engine.state.value
    rec.phases = assemble.phase_rows(result.recipe, events, result.duration_s, "complete", state)
    rec.harvests = assemble.harvest_rows(result.recipe, events)
    cells = {str(h.get("name")): h for h in summary.get("harvests", [])}
    for row in rec.harvests:  # the cells side of the twin is computed by its summary
        assemble.cells_side(row, cells.get(row.name, {}))
    rec.alarm_spans = analysis.alarm_spans(events)
    rec.series = _series(result)
    samples, period_s = _samples(result)
    found = analysis.find_excursions(
        samples,
        assemble.bands(result.recipe),
        assemble.windows(rec.harvests),
        period_s,
        rec.debounce_s,
    )
    for exc in found:
        exc.causes = [
            f"door (simulated, opened at {d.at_s / 3600:.2f} h for {d.duration_s:.0f} s)"
            for d in result.doors
            if d.at_s - 10.0 <= exc.end_s and d.at_s + d.duration_s >= exc.start_s - 10.0
        ]
    rec.open_excursions, rec.notes = assemble.attach_excursions(rec.harvests, found)
    assemble.pericellular_means(rec)
    return rec
