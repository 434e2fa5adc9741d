"""Gather the record of a service run from the run journal, the audit trail and the store."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from common.config_errors import ConfigError, validate_model
from controller.core.recipe import Recipe
from controller.service.journal import RunRecord
from controller.service.site import ReactorConfig
from drivers.catalog import device_roles
from records import analysis, assemble
from records.model import SERIES, AuditRow, BatchRecord, Instrument, Outage
from records.state import RecordError, SiteState
from records.store import StoredPoint, StoreReader

DEFAULT_DEBOUNCE_S = 10.0
"""The recipe engine's excursion debounce when the checkpoint holds no exposure clock, s."""
TRUSTED = (None, "good", "simulated")
"""Qualities control acts on (``None``: the store keeps no quality, e.g. numbers only)."""
FLOWS = {"n2": "n2_lpm", "air": "air_lpm", "o2": "o2_lpm", "co2": "co2_lpm"}
CAUSE_LEAD_S = 120.0
"""A note, set-point change or alarm this long before an excursion may explain it, s."""


def gather(
    state: SiteState, reader: StoreReader, run_id: str, harvest: str | None = None
) -> BatchRecord:
    """The record of ``run_id``; :class:`RecordError` for an unknown run or harvest."""
    run = state.run(run_id)
    recipe = recipe_of(run)
    names = [h.name for p in recipe.phases for h in p.harvests]
    if harvest is not None and harvest not in names:
        msg = f"run {run_id} has no harvest '{harvest}' (harvests: {', '.join(names) or 'none'})"
        raise RecordError(msg)
    journal = state.journal
    ckpt = journal.checkpoint(run_id)
    events = journal.events(run_id)
    cfg = _reactor(state, run)
    period_s = cfg.process.control_period_s if cfg else 1.0
    clock = (ckpt.engine.get("clock") if ckpt else None) or {}
    last_s = ckpt.run_t_s if ckpt else 0.0
    engine_state = str(ckpt.engine.get("state", "running")) if ckpt else "running"
    rec = BatchRecord(
        source="service",
        run_id=run_id,
        site=state.site.site,
        reactor=run.reactor,
        reactor_name=cfg.name if cfg else "(not in the site file)",
        vessel=_vessel(cfg),
        recipe=recipe,
        recipe_sha256=run.recipe_sha256,
        recipe_toml=run.recipe_toml,
        status=run.status,
        provisional=run.status == "active",
        started_utc=run.started_utc,
        ended_utc=journal.ended_utc(run_id),
        last_s=last_s,
        period_s=period_s,
        debounce_s=float(clock.get("debounce_s", DEFAULT_DEBOUNCE_S)),
        generated_utc=datetime.now(UTC),
        store=reader.description,
        selected_harvest=harvest,
        events=events,
        instruments=_instruments(cfg, calibration_in_force(state, run)),
    )
    rec.phases = assemble.phase_rows(recipe, events, last_s, run.status, engine_state)
    rec.harvests = assemble.harvest_rows(recipe, events)
    rec.alarm_spans = analysis.alarm_spans(events)
    rec.outages = [
        Outage((a - run.started_utc).total_seconds(), (b - run.started_utc).total_seconds(), a)
        for a, b in journal.outages(run_id)
    ]
    _audit(rec, state, run)
    _store(rec, reader, recipe)
    return rec


def recipe_of(run: RunRecord) -> Recipe:
    """The recipe a run ran, validated again from the journaled text."""
    try:
        return validate_model(run.run_id, tomllib.loads(run.recipe_toml), Recipe)
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        msg = f"run {run.run_id}: the journaled recipe no longer validates: {exc}"
        raise RecordError(msg) from None


def _reactor(state: SiteState, run: RunRecord) -> ReactorConfig | None:
    try:
        return state.site.reactor(run.reactor)
    except KeyError:
        return None


def _vessel(cfg: ReactorConfig | None) -> dict[str, str]:
    if cfg is None:
        return {}
    p = cfg.process
    return {
        "volume": f"{p.volume_l:g} L",
        "leak": f"{p.leak_lpm:g} L/min",
        "N2 / air / O2 / CO2 max": (
            f"{p.n2_max_lpm:g} / {p.air_max_lpm:g} / {p.o2_max_lpm:g} / {p.co2_max_lpm:g} L/min"
        ),
        "heater": f"{p.heater_max_w:g} W",
        "control period": f"{p.control_period_s:g} s",
        "restart policy": cfg.restart,
    }


def calibration_in_force(state: SiteState, run: RunRecord) -> dict[str, str] | None:
    """Sensor role -> the calibration applied during the run, in words.

    As the service audited it when the run started (``None``: the entry predates calibration
    records). Calibration is offline (the service stopped), so it cannot change during a run.
    """
    for entry in state.audit_of_run(run):
        if entry.action != "run_start":
            continue
        try:
            value = json.loads(entry.new_value)
        except ValueError:
            return None
        found = value.get("calibration") if isinstance(value, dict) else None
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None
    return None


def _instruments(cfg: ReactorConfig | None, calibration: dict[str, str] | None) -> list[Instrument]:
    out = []
    for d in cfg.devices if cfg else []:
        where = [f"{k} {getattr(d, k)}" for k in ("bus", "line") if getattr(d, k, None)]
        where += [f"{k} {getattr(d, k)}" for k in ("unit", "unit_id") if getattr(d, k, None)]
        roles = device_roles(d)
        calibrated = [r for r in roles if calibration and r in calibration]
        if calibrated and calibration is not None:
            shown = "; ".join(
                calibration[r] if len(calibrated) == 1 else f"{r}: {calibration[r]}"
                for r in calibrated
            )
        else:
            shown = str(getattr(d, "calibration_date", None) or "not recorded")
        out.append(
            Instrument(
                d.name,
                d.driver,
                ", ".join(roles),
                ", ".join(where),
                str(getattr(d, "serial_number", None) or "not recorded"),
                shown,
            )
        )
    return out


def _audit(rec: BatchRecord, state: SiteState, run: RunRecord) -> None:
    rec.audit = [
        AuditRow(
            r.seq,
            r.utc,
            r.user,
            r.role,
            r.action,
            r.old_value,
            r.new_value,
            r.reason,
            r.outcome,
            r.hash,
        )
        for r in state.audit_of_run(run)
    ]
    rec.audit_head = state.audit.head()
    result = state.audit.verify()
    how = state.audit.how_checked()
    rec.audit_check = (
        f"chain intact ({result.count} records; {how})"
        if result.ok
        else f"BROKEN: {result.problem}"
    )
    if not result.ok:
        rec.notes.append(f"the audit trail does not verify: {result.problem}")
    confirms = [r for r in rec.audit if r.action == "confirm_harvest" and r.outcome == "accepted"]
    for h in rec.harvests:
        c = h.confirmation
        match = next((r for r in confirms if f'"{h.name}"' in r.new), None)
        if c is not None and match is not None:
            c.audit_seq, c.audit_utc = match.seq, match.utc


def _store(rec: BatchRecord, reader: StoreReader, recipe: Recipe) -> None:
    telemetry = reader.points("telemetry", rec.run_id)
    event_points = reader.points("event", rec.run_id)
    rec.telemetry_points, rec.event_points = len(telemetry), len(event_points)
    if not telemetry:
        rec.notes.append(f"the store ({reader.description}) holds no telemetry of this run")
    samples = _samples(telemetry, recipe)
    rec.series = _series(telemetry)
    rec.gaps = analysis.telemetry_gaps([s.t_s for s in samples], rec.period_s)
    seqs = [int(p.fields["seq"]) for p in (*telemetry, *event_points) if "seq" in p.fields]
    rec.missing_seq = analysis.missing_ranges(seqs)
    rec.gas_l = analysis.gas_used_l(
        {gas: rec.series.get(key, []) for gas, key in FLOWS.items()}, rec.period_s
    )
    rec.gas_note = (
        "integrated from the MFC set points in the stored telemetry (one control period per "
        "recorded cycle); cycles missing from the store are not counted"
    )
    found = analysis.find_excursions(
        samples,
        assemble.bands(recipe),
        assemble.windows(rec.harvests),
        rec.period_s,
        rec.debounce_s,
    )
    for exc in found:
        exc.causes = causes(exc, rec, samples)
    rec.open_excursions, notes = assemble.attach_excursions(rec.harvests, found)
    rec.notes.extend(notes)
    assemble.pericellular_means(rec)


def _samples(points: Sequence[StoredPoint], recipe: Recipe) -> list[analysis.Sample]:
    dissolved = {p.name for p in recipe.phases if p.o2_basis == "dissolved"}
    out = []
    for p in points:
        f = p.fields
        phase = p.tags.get("phase")
        key = "do" if phase in dissolved else "o2"
        value = f.get(f"{key}_pct")
        trusted = f.get(f"{key}_quality") in TRUSTED
        out.append(
            analysis.Sample(
                float(f.get("t_s") or 0.0),
                float(value) if trusted and value is not None else None,
                phase,
                f.get("phase_state"),
            )
        )
    return out


def _series(points: Sequence[StoredPoint]) -> dict[str, list[float | None]]:
    return {key: [_float(p.fields.get(key)) for p in points] for key in SERIES if key != "t_s"} | {
        "t_s": [_float(p.fields.get("t_s")) for p in points]
    }


def _float(value: Any) -> float | None:
    return None if value is None or isinstance(value, str) else float(value)


def causes(
    exc: analysis.Excursion, rec: BatchRecord, samples: Sequence[analysis.Sample]
) -> list[str]:
    """What the journal says about an excursion: notes (doors), holds, set points, alarms."""
    a, b = exc.start_s, exc.end_s
    out: list[str] = []
    for ev in rec.events:
        t = float(ev["t_s"])
        if not a - CAUSE_LEAD_S <= t <= b:
            continue
        kind = ev["kind"]
        if kind == "note":
            text = str(ev.get("text", ""))
            label = "door" if "door" in text.lower() else "note"
            out.append(f"{label} (note by {ev.get('user')} at {_clock(rec, t)}: “{text}”)")
        elif kind == "setpoint_changed":
            out.append(
                f"set point {ev.get('variable')} {ev.get('old')} → {ev.get('new')} "
                f"by {ev.get('user')}"
            )
        elif kind == "phase_held":
            out.append(f"phase held at {_clock(rec, t)}")
        elif kind == "alarm" and ev.get("why") == "activated" and t >= a:
            out.append(f"alarm {ev.get('alarm')} ({ev.get('priority')})")
        elif kind == "interlock" and ev.get("state") == "tripped" and t >= a:
            out.append(f"interlock {ev.get('interlock')}")
    if analysis.held_within(samples, a, b) and not any(c.startswith("phase held") for c in out):
        out.append("phase held")
    if exc.untrusted_s > 0:
        out.append(f"O2 reading untrusted for {exc.untrusted_s:.0f} s")
    out += [
        f"controller outage ({o.seconds:.0f} s)"
        for o in rec.outages
        if o.start_s < b and o.end_s > a
    ]
    return list(dict.fromkeys(out))


def _clock(rec: BatchRecord, t_s: float) -> str:
    utc = rec.utc_at(t_s)
    return f"{utc:%H:%M:%S}Z" if utc else f"{t_s:.0f} s"
