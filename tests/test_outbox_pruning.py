"""The outbox stays bounded: acknowledged messages older than the replay window are pruned, numbers
are never reused, replays still work above the pruning boundary, and a request reaching below it
gets a clear answer (``replay/result``) that the recorder records as lost at once."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.service.journal import OutboxMessage, RunJournal
from controller.service.site import load_site
from tests.servers import Mosquitto
from tests.service_kit import air_hold, site_file, stack
from tests.test_recorder_kit import SITE, TOPIC_ROOT, recording, sqlite_seqs, wait_until
from tests.test_recorder_tail import _published, controller_link, site_messages

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)

# ---- the journal alone ---------------------------------------------------------------------------


def _journal_with(tmp_path: Path, n: int) -> RunJournal:
    """A journal whose outbox holds ``n`` messages of ws1 and ``n`` of ws2, none acknowledged."""
    journal = RunJournal.open(tmp_path / "journal.sqlite")
    for reactor in ("ws1", "ws2"):
        run_id = journal.start_run(reactor, "r", "0" * 64, "", T0)
        outbox = [
            OutboxMessage(reactor, seq, f"{TOPIC_ROOT}/{SITE}/{reactor}/telemetry", "{}")
            for seq in range(1, n + 1)
        ]
        journal.commit_cycle(run_id, T0, 0.0, {}, {}, [], outbox)
    return journal


def test_prune_deletes_only_acknowledged_rows_older_than_the_cutoff(tmp_path: Path) -> None:
    journal = _journal_with(tmp_path, 10)
    try:
        for seq in range(1, 8):  # ws1: 1..7 acknowledged at T0 + seq s; 8..10 not yet
            journal.mark_published("ws1", seq, T0_MS + seq * 1000)
        for seq in range(1, 11):  # ws2: all acknowledged late
            journal.mark_published("ws2", seq, T0_MS + 100_000)
        deleted = journal.prune_outbox(T0_MS + 5_500)  # acknowledged before T0 + 5.5 s
        assert deleted == 5
        assert [m.seq for m in journal.replay("ws1", 1, 100)] == [6, 7, 8, 9, 10]
        assert journal.pruned_through("ws1") == 5
        assert journal.pruned_through("ws2") == 0
        assert len(journal.replay("ws2", 1, 100)) == 10
        # the unacknowledged are never pruned, however old the cutoff
        assert journal.prune_outbox(T0_MS + 50_000) == 2
        assert [m.seq for m in journal.replay("ws1", 1, 100)] == [8, 9, 10]
        assert [m.seq for m in journal.unpublished()] == [8, 9, 10]
        # everything of ws1 gone: its numbers still go on, never reused
        for seq in (8, 9, 10):
            journal.mark_published("ws1", seq, T0_MS + 60_000)
        journal.prune_outbox(T0_MS + 70_000)
        assert journal.replay("ws1", 1, 100) == []
        assert journal.next_seq("ws1") == 11
        assert journal.pruned_through("ws1") == 10
    finally:
        journal.close()


def test_prune_goes_in_bounded_steps_oldest_first(tmp_path: Path) -> None:
    journal = _journal_with(tmp_path, 10)
    try:
        for seq in range(1, 11):  # interleaved: ws1's n-th acknowledged just before ws2's
            journal.mark_published("ws1", seq, T0_MS + seq * 1000)
            journal.mark_published("ws2", seq, T0_MS + seq * 1000 + 500)
        assert journal.prune_outbox(T0_MS + 100_000, max_rows=3) == 3
        assert (journal.pruned_through("ws1"), journal.pruned_through("ws2")) == (2, 1)
        assert journal.replay("ws2", 1, 100)[0].seq == 2
        steps = [3]
        while deleted := journal.prune_outbox(T0_MS + 100_000, max_rows=3):
            steps.append(deleted)
        assert steps == [3, 3, 3, 3, 3, 3, 2]
        assert (journal.pruned_through("ws1"), journal.pruned_through("ws2")) == (10, 10)
    finally:
        journal.close()


def test_prune_is_one_indexed_delete(tmp_path: Path) -> None:
    journal = _journal_with(tmp_path, 3)
    try:
        plan = journal.conn.execute(
            "EXPLAIN QUERY PLAN DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox "
            "WHERE published BETWEEN 1 AND ? ORDER BY published, reactor, seq LIMIT ?)",
            (5, 10),
        ).fetchall()
        detail = " ".join(str(row[-1]) for row in plan)
        assert "outbox_pending" in detail, detail  # a range on the index, not a table scan
    finally:
        journal.close()


# ---- the real controller, Mosquitto and recorder -------------------------------------------------

WINDOW_H = 0.01
"""36 s: a run of a couple of minutes of stepped time prunes most of its outbox."""
AIR_RECIPE = air_hold("air", 0.1)


def _lost(spool: Path) -> list[tuple[str, int, int]]:
    with contextlib.closing(sqlite3.connect(spool)) as db:
        rows = db.execute("SELECT reactor, from_seq, to_seq FROM lost ORDER BY from_seq").fetchall()
    return [(str(r), int(a), int(b)) for r, a, b in rows]


@pytest.mark.skipif(not Mosquitto.available(), reason="needs mosquitto")
async def test_replays_across_the_pruning_boundary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        path = site_file(tmp_path, broker=f'host = "127.0.0.1"\nport = {broker.port}')
        path.write_text(
            path.read_text()
            + f"\n[recorder]\nbatch_interval_s = 0.1\n\n[journal]\nreplay_window_h = {WINDOW_H}"
            + "\nprune_every_s = 5\n"
        )
        store = load_site(path).state_dir / "telemetry.sqlite"
        async with (
            stack(tmp_path, AIR_RECIPE, site_path=path) as st,
            controller_link(st, journal_config=st.site.journal) as link,
            site_messages(broker.port, "replay/result", "test-result-watch") as results,
        ):
            journal = st.service.journal
            run = st.runner.run
            assert run is not None
            assert st.service.processor is not None
            # a run of ~2 min of stepped time, published as it goes: most of it is pruned
            for _ in range(12):
                await st.cycles(10)
                await _published(st, link)
            # an event: the retained state announces the last number (the recorder's tail)
            note = {"verb": "note", "reactor": "ws1", "run_id": run.run_id, "user": "erik"}
            assert st.service.processor.handle({**note, "text": "before the recorder"}).ok
            await st.cycles(1)
            await _published(st, link)
            pruned = journal.pruned_through("ws1")
            last = st.runner.seq - 1
            assert link.pruned == pruned > 0
            held = journal.replay("ws1", 1, 10**9)
            assert held[0].seq == pruned + 1  # a prefix went, the rest is whole
            assert [m.seq for m in held] == list(range(pruned + 1, last + 1))
            assert journal.next_seq("ws1") == last + 1
            # what is held spans at most the window (+ one prune period, + a cycle of slack)
            first_ts = json.loads(held[0].payload)["ts_ms"]
            last_ts = json.loads(held[-1].payload)["ts_ms"]
            assert last_ts - first_ts <= (WINDOW_H * 3600 + 5 + 2) * 1000
            # a recorder starting now backfills from 1: the pruned part is answered as such and
            # recorded as lost at once; the rest is replayed and stored
            with caplog.at_level(logging.INFO):
                async with recording(path) as recorder:
                    await wait_until(
                        lambda: (
                            sorted(sqlite_seqs(store, "telemetry") + sqlite_seqs(store, "event"))
                            == list(range(pruned + 1, last + 1))
                        ),
                        "everything still held replayed and stored, once",
                        timeout_s=30,
                    )
                    await wait_until(
                        lambda: recorder.tracker is not None and not recorder.tracker.missing(),
                        "nothing missing any more",
                    )
                    assert recorder.stats.lost == pruned
                    spool = recorder.spool.path
            assert _lost(spool) == [("ws1", 1, pruned)]
            assert f"seq 1-{pruned} cannot be replayed" in caplog.text
            assert "replay_window_h" in caplog.text
            assert results, "no replay/result answer"
            answer = results[0]
            assert answer["reactor"] == "ws1"
            assert answer["pruned_through"] == pruned
            assert answer["replay_window_h"] == WINDOW_H
            assert f"seq 1-{pruned} of ws1 are no longer held" in answer["message"]
    finally:
        broker.stop()
