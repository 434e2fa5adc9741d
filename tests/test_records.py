"""Audit trail, run journal and the exactness of engine/controller snapshots."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.core.reactor import ReactorController
from controller.core.recipe_engine import Event, Measured, RecipeEngine
from controller.service.audit import AuditTrail
from controller.service.journal import RunJournal
from simulators.plant import Plant
from simulators.twin import _Sensors
from simulators.vessel import load_vessel
from tests.conftest import hold_recipe

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _trail(tmp_path: Path) -> tuple[AuditTrail, Path]:
    path = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(path)
    for i in range(5):
        trail.append(
            T0 + timedelta(minutes=i),
            "ana",
            "engineer",
            "set_setpoint",
            "r1.o2_pct",
            old=2.0 + i,
            new=2.1 + i,
            reason=f"step {i}",
        )
    return trail, path


def test_audit_chain_verifies(tmp_path: Path) -> None:
    trail, _ = _trail(tmp_path)
    result = trail.verify()
    assert result.ok
    assert result.count == 5


def test_audit_is_append_only(tmp_path: Path) -> None:
    trail, _ = _trail(tmp_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        trail.conn.execute("UPDATE audit SET reason = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        trail.conn.execute("DELETE FROM audit WHERE seq = 2")


def _tamper(path: Path, *sql: str) -> AuditTrail:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for statement in sql:
        conn.execute(statement)
    conn.close()
    return AuditTrail.open(path)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE audit SET new_value = '9.9' WHERE seq = 3", "record 3: content does not match"),
        ("DELETE FROM audit WHERE seq = 2", "record 2 is missing"),
        ("DELETE FROM audit WHERE seq = 5", "ends at record 4"),
        ("UPDATE audit SET seq = 10 WHERE seq = 5", "record 5 is missing"),
    ],
)
def test_audit_tampering_is_detected(tmp_path: Path, sql: str, problem: str) -> None:
    _, path = _trail(tmp_path)
    result = _tamper(path, sql).verify()
    assert not result.ok
    assert problem in result.problem


def test_audit_insertion_is_detected(tmp_path: Path) -> None:
    trail, path = _trail(tmp_path)
    rec = trail.records()[1]
    # a deliberate forgery that reuses a real hash, built from test constants only
    forged = "INSERT INTO audit VALUES (99, '2026-01-01', 'eve', 'admin', 'x', 'y', '1', '2', " + (
        f"'', 'accepted', '{rec.hash}', '{rec.hash}')"
    )
    result = _tamper(path, "UPDATE audit SET seq = seq + 100 WHERE seq >= 3", forged).verify()
    assert not result.ok


def test_journal_roundtrip(tmp_path: Path) -> None:
    journal = RunJournal.open(tmp_path / "j.sqlite")
    run_id = journal.start_run("r1", "recipe", "abc", "name = 'x'", T0)
    assert journal.active_run("r1") is not None
    journal.commit_cycle(
        run_id, T0, 1.0, {"a": 1}, {"b": 2}, [Event(1.0, "harvest_due", {"name": "H"})]
    )
    ckpt = journal.checkpoint(run_id)
    assert ckpt is not None
    assert (ckpt.engine, ckpt.controller, ckpt.run_t_s) == ({"a": 1}, {"b": 2}, 1.0)
    journal.record_outage(run_id, T0, T0 + timedelta(seconds=42))
    assert journal.outages(run_id) == [(T0, T0 + timedelta(seconds=42))]
    assert [e["kind"] for e in journal.events(run_id)] == ["harvest_due"]
    journal.finish_run(run_id, "complete", T0)
    assert journal.active_run("r1") is None


def test_snapshot_restore_continues_bit_for_bit() -> None:
    """Killing and restoring the engine and controller mid-hold changes nothing afterwards."""
    vessel = load_vessel("workstation-100l")
    recipe = hold_recipe(2.0, hold_h=2.0, harvests=(0.5, 1.0), until="exposure")

    def run(restore_at: int | None) -> list[tuple[float, ...]]:
        plant = Plant(vessel)
        import random

        sensors = _Sensors(vessel, plant, 1.0, random.Random(5))
        ctl = ReactorController(vessel.process_model())
        engine = RecipeEngine(recipe)
        engine.start(0.0)
        ctl.apply_phase(engine.phase)
        measured: Measured = sensors.read()
        out: list[tuple[float, ...]] = []
        for n in range(1, 3 * 3600):
            if n == restore_at:
                engine = RecipeEngine.restore(recipe, engine.snapshot())
                fresh = ReactorController(vessel.process_model())
                fresh.apply_phase(engine.phase)
                fresh.restore(ctl.snapshot())
                ctl = fresh
            act = ctl.step(1.0, measured)
            plant.advance(1.0, act.n2_lpm, act.air_lpm, act.o2_lpm, act.co2_lpm, act.heater_w)
            measured = sensors.read()
            index = engine.index
            engine.step(float(n), 1.0, measured)
            if engine.index != index:
                ctl.apply_phase(engine.phase)
            out.append((act.n2_lpm, act.co2_lpm))
            if engine.finished:
                break
        out.extend((h.at_s, h.exposure_s) for h in engine.harvests)
        return out

    assert run(restore_at=2500) == run(restore_at=None)
