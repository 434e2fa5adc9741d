"""The tail of a stream: the last messages of a run, lost between the broker and the recorder, are
noticed through the retained state's ``last_seq`` and asked for again; the state's audit head is
kept by the recorder. Units first, then the real controller, Mosquitto and recorder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.service.mqtt_link import MqttLink
from controller.service.site import load_site
from recorder.gaps import GapTracker, ReplayPolicy
from recorder.intake import Intake, Refused, StateSeen
from recorder.spool import Spool, read_audit_heads
from telemetry.topics import Topics
from tests.servers import Mosquitto
from tests.service_kit import Stack, air_hold, site_file, stack
from tests.test_recorder_kit import SITE, TOPIC_ROOT, recording, sqlite_seqs, wait_until

INTAKE = Intake(TOPIC_ROOT, SITE)
STATE_TOPIC = f"{TOPIC_ROOT}/{SITE}/ws1/state"
HEAD = {"seq": 7, "hash": "ab" * 32}


def _state(**changes: Any) -> bytes:
    base = {"v": 1, "ts_ms": 5, "site": SITE, "reactor": "ws1", "last_seq": 40, "audit_head": HEAD}
    return json.dumps(base | changes).encode()


# ---- units ------------------------------------------------------------------------------------


def test_state_messages_give_last_seq_and_audit_head() -> None:
    seen = INTAKE.parse_state(STATE_TOPIC, _state())
    assert seen == StateSeen("ws1", 40, (7, "ab" * 32), 5)
    old = INTAKE.parse_state(
        STATE_TOPIC, json.dumps({"v": 1, "site": SITE, "reactor": "ws1"}).encode()
    )
    assert old == StateSeen("ws1", None, None, 0)  # a controller of an earlier version
    assert INTAKE.parse_state(STATE_TOPIC, b"") == StateSeen("ws1", None, None, 0)  # cleared
    for bad, why in (
        (_state(last_seq="40"), "last_seq"),
        (_state(last_seq=-1), "last_seq"),
        (_state(audit_head={"seq": 1, "hash": "nothex"}), "audit_head"),
        (_state(reactor="ws2"), "reactor"),
        (b"{", "not JSON"),
    ):
        refused = INTAKE.parse_state(STATE_TOPIC, bad)
        assert isinstance(refused, Refused)
        assert why in refused.reason


def test_an_announced_last_seq_opens_the_tail_as_a_gap() -> None:
    tracker = GapTracker({}, ReplayPolicy(grace_s=1.0))
    for seq in range(1, 11):
        tracker.observe("ws1", seq)
    assert tracker.due(0.0)[0] == []  # nothing after 10 shows in the messages themselves
    assert tracker.announce("ws1", 14)
    assert not tracker.announce("ws1", 12)  # an older state tells nothing new
    assert tracker.missing() == {"ws1": [(11, 14)]}
    assert tracker.due(0.5)[0] == []  # grace: the messages may still be on their way
    (request,) = tracker.due(2.0)[0]
    assert (request.from_seq, request.to_seq) == (11, 14)
    for seq in (11, 12, 13, 14):
        tracker.observe("ws1", seq)
    assert tracker.missing() == {}
    tracker.observe("ws1", 15)  # the stream goes on past the announcement
    assert tracker.missing() == {}


def test_without_backfill_a_first_announcement_starts_the_count() -> None:
    tracker = GapTracker({}, ReplayPolicy(), backfill=False)
    tracker.announce("ws1", 500)
    assert tracker.missing() == {}
    tracker.observe("ws1", 501)
    assert tracker.states["ws1"].contiguous == 501


def test_the_announcement_survives_a_restart_in_the_spool(tmp_path: Path) -> None:
    tracker = GapTracker({}, ReplayPolicy())
    tracker.observe("ws1", 1)
    tracker.announce("ws1", 9)
    spool = Spool(tmp_path / "spool.sqlite")
    spool.commit([], tracker.states)
    spool.close()
    states = Spool(tmp_path / "spool.sqlite").load_states()
    assert states["ws1"].missing() == [(2, 9)]


# ---- end to end ---------------------------------------------------------------------------------

QUEUE_LIMIT = 5

TAIL_RECIPE = (
    air_hold("tail", 0.012)
    + """
  [[phases.harvests]]
  name = "CM-end"
  at_exposure_h = 0.005
  action = "pump"
  volume_ml = 1.0
  flow_ml_per_min = 60.0
"""
)


class SmallQueueMosquitto(Mosquitto):
    """Mosquitto keeping only a few QoS 1 messages for an offline client (it drops the newest
    beyond ``max_queued_messages``, as it does past its default of 1000)."""

    def command(self) -> list[str]:
        cmd = super().command()
        conf = Path(cmd[-1])
        conf.write_text(
            conf.read_text().replace(
                "max_queued_messages 100000", f"max_queued_messages {QUEUE_LIMIT}"
            )
        )
        return cmd


@contextlib.asynccontextmanager
async def controller_link(st: Stack, **options: Any) -> AsyncIterator[MqttLink]:
    """The service's MQTT link to the site's broker, running beside the test's cycles.

    ``options`` go to :class:`MqttLink` (``journal_config``, ``partition``).
    """
    site = st.site
    assert st.service.processor is not None
    link = MqttLink(
        site.broker,
        Topics(site.broker.root, site.site),
        st.service.journal,
        st.service.runners,
        st.service.processor,
        st.clock,
        **options,
    )
    for runner in st.service.runners.values():
        runner.notify = link.notify
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    try:
        await wait_until(lambda: link.connected.is_set() or task.done(), "controller connected")
        yield link
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def site_messages(
    port: int, subtopic: str, identifier: str
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every JSON message published on the site's ``subtopic`` (``replay/request``, say), as a
    bystander (MQTT client ``identifier``) sees it."""
    seen: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=identifier) as client:
            await client.subscribe(f"{TOPIC_ROOT}/{SITE}/{subtopic}", qos=1)
            ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append(json.loads(message.payload))

    task = asyncio.create_task(listen())
    await wait_until(lambda: ready.is_set() or task.done(), f"{identifier} subscribed")
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _published(st: Stack, link: MqttLink) -> None:
    """Wait until the broker has acknowledged everything in the outbox."""
    await wait_until(
        lambda: link.idle.is_set() and not st.service.journal.unpublished(1), "outbox published"
    )


@pytest.mark.skipif(not Mosquitto.available(), reason="needs mosquitto")
async def test_a_run_tail_lost_at_the_broker_is_requested_and_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = SmallQueueMosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        path = site_file(tmp_path, broker=f'host = "127.0.0.1"\nport = {broker.port}')
        path.write_text(path.read_text() + "\n[recorder]\nbatch_interval_s = 0.1\n")
        store = load_site(path).state_dir / "telemetry.sqlite"
        async with (
            stack(tmp_path, TAIL_RECIPE, site_path=path) as st,
            controller_link(st) as link,
            site_messages(broker.port, "replay/request", "test-replay-watch") as requests,
        ):
            runner = st.runner
            run = runner.run
            assert run is not None
            assert st.service.processor is not None
            async with recording(path) as recorder:
                await st.cycles(5)
                note = {"verb": "note", "reactor": "ws1", "run_id": run.run_id, "user": "erik"}
                assert st.service.processor.handle({**note, "text": "seeding"}).ok
                await st.cycles(5)
                await _published(st, link)
                await wait_until(
                    lambda: (
                        recorder.tracker is not None
                        and recorder.tracker.states["ws1"].contiguous == runner.seq - 1
                    ),
                    "the first part recorded",
                )
            # the recorder is away (its persistent session waits at the broker) while the run
            # ends; the broker keeps QUEUE_LIMIT messages for it and drops the newest
            first_part = runner.seq - 1
            await st.cycles(200)
            assert st.service.journal.run(run.run_id).status == "complete"  # type: ignore[union-attr]
            last = runner.seq - 1
            assert last - first_part > QUEUE_LIMIT + 10
            await _published(st, link)  # every message acknowledged by the broker: not lost here
            head = st.service.audit.head()
            asked_before = len(requests)  # the first session backfilled what preceded it
            with caplog.at_level(logging.INFO, logger="recorder"):
                async with recording(path) as recorder:
                    await wait_until(
                        lambda: _stored(store) == list(range(1, last + 1)),
                        "every message of the run stored, once",
                        timeout_s=30,
                    )
                    assert recorder.stats.tails >= 1
                    assert recorder.tracker is not None
                    assert recorder.tracker.missing() == {}
                    spool = recorder.spool.path
        # the tail was asked for, and nothing else: only the state could tell it was missing
        asked = requests[asked_before:]
        assert asked, "no replay request"
        assert all(r["reactor"] == "ws1" for r in asked)
        assert all(r["from_seq"] > first_part for r in asked), (asked, first_part)
        assert max(r["to_seq"] for r in asked) == last
        # the run's last events were in that tail, and are stored now
        tail_from = min(r["from_seq"] for r in asked)
        events = _events(store)
        for kind in ("harvest_done", "run_complete"):
            assert kind in events, events
            assert events[kind] >= tail_from, (kind, events[kind], tail_from)
        assert f"the controller has published up to seq {last}" in caplog.text
        # the recorder kept the audit head the state carried (run_start + the note: record 2)
        assert head[0] == 2
        heads = {(h.seq, h.hash) for h in read_audit_heads(spool)}
        assert head in heads
    finally:
        broker.stop()


def _stored(store: Path) -> list[int]:
    return sorted(sqlite_seqs(store, "telemetry") + sqlite_seqs(store, "event"))


def _events(store: Path) -> dict[str, int]:
    """Event kind -> the highest seq of that kind in the store."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute(
            "SELECT json_extract(tags, '$.kind'), max(json_extract(fields, '$.seq')) FROM points "
            "WHERE measurement = 'event' GROUP BY 1"
        ).fetchall()
    return {str(kind): int(seq) for kind, seq in rows}


async def test_a_head_going_back_is_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from recorder.service import Recorder
    from tests.test_recorder_kit import site_file as recorder_site

    recorder = Recorder(load_site(recorder_site(tmp_path, 1883, 'kind = "sqlite"')))

    def feed(seq: int, digest: str) -> None:
        payload = _state(audit_head={"seq": seq, "hash": digest})
        message = aiomqtt.Message(STATE_TOPIC, payload, qos=1, retain=True, mid=1, properties=None)
        recorder._record([message])

    try:
        with caplog.at_level(logging.ERROR, logger="recorder"):
            feed(20, "cd" * 32)
            feed(20, "cd" * 32)
            assert caplog.text == ""
            feed(19, "ef" * 32)
        assert "went from record 20" in caplog.text
        assert "to record 19" in caplog.text
        assert recorder.spool.audit_head() == (20, "cd" * 32)
    finally:
        recorder.spool.close()
