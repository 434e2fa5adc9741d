"""Run history: a run killed mid-hold and resumed is listed once, with its outage; its record
shows the outage and the matching gap in the stored telemetry."""

from __future__ import annotations

import json
from pathlib import Path

from recorder.points import message_points
from recorder.stores import Sqlite
from telemetry.config import SqliteStore
from tests.cli import hypoxia
from tests.records_kit import record_of, write_store
from tests.service_kit import ROOT, site_file, stack

SHORT = (ROOT / "examples/recipes/short-demo.toml").read_text()
OUTAGE_S = 60.0


async def test_a_killed_and_resumed_run_is_listed_once_with_its_outage(tmp_path: Path) -> None:
    site = site_file(tmp_path)
    async with stack(tmp_path, SHORT, site_path=site) as st:
        await st.cycles(200)  # mid-hold; then the service dies without ending the run
        run = st.runner.run
        assert run is not None
        run_id, clock = run.run_id, st.clock
    clock.advance(OUTAGE_S)  # nothing runs for a minute
    async with stack(tmp_path, "", site_path=site, clock=clock) as st:  # restarted: resumes
        assert st.runner.run is not None
        assert st.runner.run.run_id == run_id
        await st.cycles(2000)
        assert st.service.journal.run(run_id).status == "complete"  # type: ignore[union-attr]
        outbox = st.service.journal.replay("ws1", 1, 10**9)
    points = [
        p for m in outbox for p in message_points(m.topic.rsplit("/", 1)[1], json.loads(m.payload))
    ]
    await write_store(Sqlite(SqliteStore(kind="sqlite"), tmp_path / "state"), points)

    listed = hypoxia("runs", str(site), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == run_id
    assert row["state"] == "complete"
    assert row["outages"] == 1
    assert row["outage_s"] >= OUTAGE_S
    assert (row["harvests_due"], row["harvests_planned"]) == (2, 2)
    table = hypoxia("runs", str(site), "--reactor", "ws1")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count(run_id) == 1
    assert "1 (6" in table.stdout  # one outage of about a minute
    later = hypoxia("runs", str(site), "--since", "2030-01-01", "--json")
    assert json.loads(later.stdout) == []

    rec = record_of(site, run_id)
    (outage,) = rec.outages
    assert outage.seconds >= OUTAGE_S
    (gap,) = rec.gaps  # the store misses exactly the cycles the controller never ran
    assert abs(gap.missing_s - outage.seconds) <= 2.0
    assert rec.missing_seq == []  # a gap in time, not in sequence numbers
    assert [a.action for a in rec.audit] == ["run_start", "run_resume"]
