"""The recorder against failures, with a real Mosquitto and the SQLite store: gaps refilled by
replay requests (and given up, bounded), a SIGKILLed recorder process, a restarted and a killed
broker. After each, every message is in the store exactly once."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recorder.gaps import ReplayPolicy
from tests.servers import Mosquitto
from tests.test_recorder_kit import (
    Stream,
    publish,
    publish_through_outages,
    recording,
    replay_answerer,
    site_file,
    sqlite_seqs,
    wait_until,
)

pytestmark = pytest.mark.skipif(not Mosquitto.available(), reason="needs mosquitto")

SQLITE = 'kind = "sqlite"'


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto")
    server.start()
    yield server
    server.stop()


def store_path(tmp: Path) -> Path:
    return tmp / "state" / "telemetry.sqlite"


def complete(tmp: Path, stream: Stream, seqs: list[int]) -> bool:
    """Every message of ``seqs`` is in the store, each once."""
    expected = stream.kinds(seqs)
    return all(
        sqlite_seqs(store_path(tmp), kind) == expected[kind] for kind in ("telemetry", "event")
    )


async def test_gaps_are_requested_again_until_replays_fill_them(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    stream = Stream()
    seqs = stream.add(30)
    withheld = {5, 6, 7, 20}
    asked: Counter[tuple[int, int]] = Counter()

    def second_time(request: dict[str, Any], _n: int) -> bool:
        asked[request["from_seq"], request["to_seq"]] += 1
        return asked[request["from_seq"], request["to_seq"]] >= 2  # ignore the first request

    site = site_file(tmp_path, mosquitto.port, SQLITE)
    async with (
        replay_answerer(mosquitto.port, stream, second_time) as requests,
        recording(site) as recorder,
    ):
        await publish(mosquitto.port, stream, [s for s in seqs if s not in withheld])
        await wait_until(lambda: complete(tmp_path, stream, seqs), "gaps refilled")
        assert recorder.tracker is not None
        assert recorder.tracker.missing() == {}
        assert recorder.tracker.states["ws1"].contiguous == len(stream.messages)
    assert requests[:2] == [
        {"v": 1, "reactor": "ws1", "from_seq": 5, "to_seq": 7},
        {"v": 1, "reactor": "ws1", "from_seq": 20, "to_seq": 20},
    ]
    assert asked[5, 7] >= 2
    assert asked[20, 20] >= 2


async def test_a_gap_nobody_fills_is_given_up_after_bounded_requests(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    stream = Stream()
    seqs = stream.add(10)
    policy = ReplayPolicy(grace_s=0.1, retry_s=0.2, retry_max_s=0.3, max_requests=3)
    site = site_file(tmp_path, mosquitto.port, SQLITE)
    with caplog.at_level(logging.INFO, logger="recorder"):
        async with (
            replay_answerer(mosquitto.port, stream, lambda _r, _n: False) as requests,
            recording(site, policy=policy) as recorder,
        ):
            await publish(mosquitto.port, stream, [s for s in seqs if s != 3])
            await wait_until(lambda: recorder.stats.lost == 1, "gap given up")
            assert len(requests) == 3
            assert recorder.spool.count("lost") == 1
            # a late replay is still stored
            await publish(mosquitto.port, stream, [3], replay=True)
            await wait_until(lambda: complete(tmp_path, stream, seqs), "late message stored")
    assert "ws1: gave up on seq 3 after 3 replay requests" in caplog.text

    # restarted, the recorder knows what it has: new messages raise no request
    more = stream.add(5)
    async with (
        replay_answerer(mosquitto.port, stream, lambda _r, _n: True) as again,
        recording(site, policy=policy),
    ):
        await publish(mosquitto.port, stream, more)
        await wait_until(lambda: complete(tmp_path, stream, seqs + more), "new messages")
        await asyncio.sleep(policy.grace_s * 3)
    assert again == []


def start_recorder(site: Path, log: Path) -> subprocess.Popen[bytes]:
    """``hypoxia record SITE`` as its own process (the same function, before registration)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hypoxia", "record", str(site)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_sigkilled_recorder_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    stream = Stream()
    seqs = stream.add(400)
    site = site_file(tmp_path, mosquitto.port, SQLITE)
    log = tmp_path / "recorder.log"

    def subscribed(n: int) -> bool:
        return log.exists() and log.read_text().count("subscribed") >= n

    proc = start_recorder(site, log)
    try:
        await wait_until(lambda: subscribed(1) or proc.poll() is not None, "recorder up")
        publisher = asyncio.create_task(publish(mosquitto.port, stream, seqs, pace_s=0.002))
        await wait_until(
            lambda: len(sqlite_seqs(store_path(tmp_path), "telemetry")) >= 60, "first points"
        )
        proc.kill()
        await asyncio.to_thread(proc.wait)
        stored_at_kill = len(sqlite_seqs(store_path(tmp_path), "telemetry"))
        await publisher  # the rest waits in the recorder's session at the broker
        proc = start_recorder(site, log)
        await wait_until(lambda: complete(tmp_path, stream, seqs), "everything stored", 30)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)
    assert stored_at_kill < len(stream.messages)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert subscribed(2)


async def test_broker_restart_mid_stream(tmp_path: Path, mosquitto: Mosquitto) -> None:
    stream = Stream()
    seqs = stream.add(150)
    site = site_file(tmp_path, mosquitto.port, SQLITE)
    async with recording(site) as recorder:
        publisher = asyncio.create_task(publish_through_outages(mosquitto.port, stream, seqs))
        await wait_until(
            lambda: len(sqlite_seqs(store_path(tmp_path), "telemetry")) >= 40, "first points"
        )
        await asyncio.to_thread(mosquitto.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(mosquitto.start)
        await publisher
        await wait_until(lambda: complete(tmp_path, stream, seqs), "everything stored")
        assert recorder.stats.connects >= 2


async def test_broker_killed_with_queued_messages_gap_refilled_by_replay(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    stream = Stream()
    first, queued, after = stream.add(10), stream.add(40), stream.add(10)
    site = site_file(tmp_path, mosquitto.port, SQLITE)
    async with replay_answerer(mosquitto.port, stream, lambda _r, _n: True) as requests:
        async with recording(site):
            await publish(mosquitto.port, stream, first)
            await wait_until(lambda: complete(tmp_path, stream, first), "first stored")
        # recorder away: the broker queues for its session, then dies with the queue
        await publish(mosquitto.port, stream, queued)
        await asyncio.to_thread(mosquitto.kill)
        await asyncio.to_thread(mosquitto.start)
        async with recording(site):
            await publish(mosquitto.port, stream, after)
            await wait_until(lambda: complete(tmp_path, stream, first + queued + after), "refill")
    assert {"v": 1, "reactor": "ws1", "from_seq": queued[0], "to_seq": queued[-1]} in requests
