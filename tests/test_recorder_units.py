"""Recorder parts without servers: message validation, gap tracking, the spool, the SQLite store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controller.service.site import load_site
from hypoxia.cli_record import record
from recorder import spool as spool_module
from recorder.gaps import GapTracker, ReplayPolicy, SeqState
from recorder.intake import Accepted, Intake, Refused
from recorder.points import Point
from recorder.service import Recorder
from recorder.spool import Spool
from recorder.stores import Sqlite
from telemetry.config import SqliteStore
from tests.test_recorder_kit import SITE, TOPIC_ROOT, Stream, site_file

SQLITE = 'kind = "sqlite"'

INTAKE = Intake(TOPIC_ROOT, SITE)


def _stream_items(cycles: int = 10) -> tuple[Stream, list[Accepted | Refused]]:
    stream = Stream()
    stream.add(cycles)
    items = [INTAKE.parse(t, json.dumps(p).encode()) for t, p in stream.messages.values()]
    return stream, items


def test_contract_messages_are_accepted_with_their_points() -> None:
    stream, items = _stream_items(15)
    assert all(isinstance(i, Accepted) for i in items)
    accepted = [i for i in items if isinstance(i, Accepted)]
    assert [i.seq for i in accepted] == sorted(stream.messages)
    harvest = [p for i in accepted for p in i.points if p.measurement == "harvest"]
    assert len(harvest) == 1
    assert harvest[0].fields["exposure_s"] == 86400.0


TELEMETRY = f"{TOPIC_ROOT}/{SITE}/ws1/telemetry"
EVENT = f"{TOPIC_ROOT}/{SITE}/ws1/event"
BASE = {"v": 1, "seq": 7, "ts_ms": 5, "site": SITE, "reactor": "ws1"}


def _json(drop: tuple[str, ...] = (), **changes: object) -> bytes:
    return json.dumps({k: v for k, v in BASE.items() if k not in drop} | changes).encode()


BAD = [
    (TELEMETRY, b"not json {", "not JSON"),
    (TELEMETRY, b"[1, 2]", "not a JSON object"),
    (TELEMETRY, _json(seq="7"), "'seq'"),
    (TELEMETRY, _json(v=2), "'v'"),
    (TELEMETRY, _json(drop=("ts_ms",)), "ts_ms"),
    (EVENT, _json(), "kind"),
    (TELEMETRY, _json(site="x"), "site"),
    (TELEMETRY, _json(o2_pct="abc"), "o2_pct"),
    (TELEMETRY, _json(pump_on=3), "pump_on"),
    (EVENT, _json(kind="note", detail=[1]), "detail"),
    (TELEMETRY, b"[" * 100_000, "not JSON"),
    (f"{TOPIC_ROOT}/{SITE}/ws1/state", b"{}", "topic"),
]


@pytest.mark.parametrize(("topic", "payload", "why"), BAD)
def test_bad_messages_are_refused_with_a_reason(topic: str, payload: bytes, why: str) -> None:
    item = INTAKE.parse(topic, payload)
    assert isinstance(item, Refused)
    assert why in item.reason
    assert item.topic == topic


def test_a_line_break_in_a_value_is_escaped_not_a_second_point() -> None:
    item = INTAKE.parse(TELEMETRY, _json(phase="hold\nbroken o2_pct=1"))
    assert not isinstance(item, Refused)
    (point,) = item.points
    line = point.line()
    assert "\n" not in line
    assert "phase=hold\\nbroken\\ o2_pct\\=1" in line


def test_a_refused_message_with_a_readable_seq_counts_as_seen() -> None:
    item = INTAKE.parse(*BAD[7][:2])
    assert isinstance(item, Refused)
    assert (item.reactor, item.seq) == ("ws1", 7)
    other = INTAKE.parse(TELEMETRY, _json(drop=("reactor",)))
    assert isinstance(other, Refused)
    assert other.seq is None  # reactor not confirmed by the payload: not trusted


def test_seq_state_merges_ranges_and_reports_gaps() -> None:
    state = SeqState(contiguous=0)
    for seq in (1, 2, 5, 7, 6, 10):
        state.settle(seq, seq)
    assert state.contiguous == 2
    assert state.missing() == [(3, 4), (8, 9)]
    assert state.settle(5, 7) == 0  # duplicates
    assert state.settle(3, 9) == 4
    assert (state.contiguous, state.above, state.missing()) == (10, [], [])


def test_gap_requests_retry_with_backoff_then_give_up() -> None:
    policy = ReplayPolicy(grace_s=1.0, retry_s=2.0, retry_max_s=3.0, max_requests=3)
    tracker = GapTracker({}, policy, backfill=False)
    for seq in (100, 101, 105, 106, 110):
        tracker.observe("ws1", seq)
    assert tracker.due(0.0) == ([], {})  # grace
    requests, _ = tracker.due(1.0)
    assert [r.payload() for r in requests] == [
        {"v": 1, "reactor": "ws1", "from_seq": 102, "to_seq": 104},
        {"v": 1, "reactor": "ws1", "from_seq": 107, "to_seq": 109},
    ]
    assert tracker.due(2.9) == ([], {})
    tracker.observe("ws1", 103)  # part of a gap arrives: both halves stay in its schedule
    requests, _ = tracker.due(3.0)
    assert [(r.from_seq, r.to_seq) for r in requests] == [(102, 102), (104, 104), (107, 109)]
    assert tracker.due(5.9)[0] == []  # second wait: 4 s, capped at 3 s
    assert len(tracker.due(6.0)[0]) == 3
    requests, lost = tracker.due(9.0)
    assert requests == []
    assert lost == {"ws1": [(102, 102), (104, 104), (107, 109)]}
    assert tracker.states["ws1"].contiguous == 110
    assert tracker.missing() == {}


def test_a_new_recorder_backfills_from_the_first_sequence_number() -> None:
    tracker = GapTracker({}, ReplayPolicy(grace_s=0.0))
    tracker.observe("ws1", 17)  # joined late: 1..16 were published before it subscribed
    requests, _ = tracker.due(0.0)
    assert [r.payload() for r in requests] == [
        {"v": 1, "reactor": "ws1", "from_seq": 1, "to_seq": 16}
    ]


def test_gap_requests_are_rate_limited_per_round() -> None:
    tracker = GapTracker({}, ReplayPolicy(grace_s=0.0, max_per_round=5))
    for seq in range(1, 40, 2):  # 19 gaps
        tracker.observe("ws1", seq)
    assert len(tracker.due(0.0)[0]) == 5


def test_spool_commits_points_and_state_atomically_and_survives_reopen(tmp_path: Path) -> None:
    _, items = _stream_items(12)
    tracker = GapTracker({}, ReplayPolicy())
    for item in items:
        assert item.reactor is not None
        assert item.seq is not None
        tracker.observe(item.reactor, item.seq)
    tracker.observe("ws1", 40)
    spool = Spool(tmp_path / "spool.sqlite")
    spool.commit(items, tracker.states)
    points = sum(len(i.points) for i in items if isinstance(i, Accepted))
    assert (spool.rows, spool.points) == (len(items), points)
    batch = spool.batch(5)
    assert batch is not None
    assert len(batch.points) >= 5
    assert batch.points[0] == items[0].points[0]  # type: ignore[union-attr]
    spool.remove(batch)
    spool.close()

    again = Spool(tmp_path / "spool.sqlite")
    assert again.points == points - len(batch.points)
    assert again.bytes > 0
    states = again.load_states()
    assert states["ws1"].missing() == [(len(items) + 1, 39)]
    while (b := again.batch(100)) is not None:
        again.remove(b)
    assert (again.rows, again.points, again.bytes) == (0, 0, 0)


def test_spool_batches_from_memory_match_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's batches come from memory while it holds every spooled row, else from the
    file (after a restart, or past ``MEMORY_POINTS``): the same points, in the same order."""
    monkeypatch.setattr(spool_module, "MEMORY_POINTS", 8)
    _, items = _stream_items(12)
    accepted = [i for i in items if isinstance(i, Accepted)]
    path = tmp_path / "spool.sqlite"
    spool = Spool(path)
    spool.commit(items[:5], {})
    first = spool.batch(3)
    assert first is not None
    assert first.points == [p for i in accepted[:3] for p in i.points]
    spool.remove(first)
    spool.commit(items[5:], {})  # past the memory bound: only the newest rows stay in memory
    seen = list(first.points)
    while (batch := spool.batch(4)) is not None:
        seen += batch.points
        spool.remove(batch)
    assert seen == [p for i in accepted for p in i.points]
    spool.commit(items[:2], {})
    spool.close()
    again = Spool(path)  # a restart: nothing in memory, read back from the file
    batch = again.batch(100)
    assert batch is not None
    assert batch.points == [p for i in accepted[:2] for p in i.points]


def test_spool_keeps_refused_messages(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite")
    refused = INTAKE.parse(*BAD[0][:2])
    spool.commit([refused], {})
    assert (spool.count("refused"), spool.rows) == (1, 0)


async def test_sqlite_store_upserts_so_duplicates_are_harmless(tmp_path: Path) -> None:
    store = Sqlite(SqliteStore(kind="sqlite", path=Path("t.sqlite")), tmp_path)
    await store.open()
    p = Point("telemetry", {"reactor": "ws1"}, {"seq": 1, "o2_pct": 2.0}, 1_000_001)
    q = Point("telemetry", {"reactor": "ws1"}, {"seq": 2, "o2_pct": 2.1}, 1_000_002)
    await store.write([p, q])
    await store.write([p, q, p])
    await store.close()
    assert store.path == tmp_path / "t.sqlite"
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT tags, time_us, fields FROM points ORDER BY time_us").fetchall()
    assert [(json.loads(t), us, json.loads(f)["seq"]) for t, us, f in rows] == [
        ({"reactor": "ws1"}, 1_000_001, 1),
        ({"reactor": "ws1"}, 1_000_002, 2),
    ]


def test_partitions_get_their_own_session_topics_and_spool(tmp_path: Path) -> None:
    site = load_site(site_file(tmp_path, 1883, SQLITE))
    everything = Recorder(site)
    part = Recorder(site, reactors=["ws1"])
    assert everything.client_id == "hypoxia-recorder-sim"
    assert everything.topics == ["hypoxia/v1/sim/+/telemetry", "hypoxia/v1/sim/+/event"]
    assert part.client_id == "hypoxia-recorder-sim-ws1"
    assert part.topics == ["hypoxia/v1/sim/ws1/telemetry", "hypoxia/v1/sim/ws1/event"]
    assert part.spool.path != everything.spool.path
    for recorder in (everything, part):
        recorder.spool.close()


def test_record_command_refuses_an_unknown_reactor(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(record)
    result = CliRunner().invoke(app, [str(site_file(tmp_path, 1883, SQLITE)), "--reactor", "ws9"])
    assert result.exit_code == 2
    assert "recorder.reactors: unknown reactor(s) ws9 (known: ws1, or *)" in result.output
