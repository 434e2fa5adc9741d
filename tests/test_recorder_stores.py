"""The recorder end to end into real stores: InfluxDB 1.6.7, VictoriaMetrics (v2 write API),
with a store outage (spill to the spool, drain in order) and a full spool (stop acknowledging)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.test_recorder_kit import (
    SITE,
    Stream,
    influx_rows,
    influx_write,
    publish,
    publish_raw,
    recording,
    site_file,
    vm_series,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not (Mosquitto.available() and InfluxDB1.available() and VictoriaMetrics.available()),
    reason="needs mosquitto, influxd and victoria-metrics (scripts/test installs them)",
)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as server:
        yield server  # type: ignore[misc]


def influx_site(tmp: Path, mqtt: Mosquitto, influx: InfluxDB1, db: str, recorder: str = "") -> Path:
    store = f'kind = "influxdb1"\nurl = "{influx.url}"\ndatabase = "{db}"'
    return site_file(tmp, mqtt.port, store, recorder)


def influx_seqs(influx: InfluxDB1, db: str, measurement: str) -> list[int]:
    """``seq`` of every point (harvest points have none: ``seq mod 1000`` from the timestamp)."""
    if measurement == "harvest":
        rows = influx_rows(influx.url, db, "SELECT forced FROM harvest")
        return sorted(r["time"] % 1000 for r in rows)
    return sorted(r["seq"] for r in influx_rows(influx.url, db, f"SELECT seq FROM {measurement}"))


def influx_complete(
    influx: InfluxDB1,
    db: str,
    expected: dict[str, list[int]],
    kinds: tuple[str, ...] = ("telemetry", "event"),
) -> bool:
    """Every expected message is in the database, each once."""
    return all(influx_seqs(influx, db, kind) == expected[kind] for kind in kinds)


async def test_influxdb1_end_to_end_with_bad_messages(
    tmp_path: Path, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    stream = Stream()
    seqs = stream.add(40)
    expected = stream.kinds(seqs)
    # InfluxDB already has field note_s as an integer (say, an older schema): it refuses the
    # one point that carries it as a float, and only that one
    conflict = expected["telemetry"].pop(10)
    stream.messages[conflict][1]["note_s"] = 1.5
    influx_write(influx.url, "e2e", f"telemetry note_s=1i {stream.t0_ms * 1000}")
    topic = stream.topic("telemetry")
    bad = [
        (topic, b"\x00 not json"),
        (topic, b'{"v": 1, "seq": 3.5}'),
        (topic, json.dumps({**stream.messages[1][1], "o2_pct": "high"}).encode()),
        (stream.topic("event"), json.dumps({**stream.messages[1][1], "kind": None}).encode()),
    ]
    async with recording(influx_site(tmp_path, mosquitto, influx, "e2e")) as recorder:
        await publish(mosquitto.port, stream, seqs[:20])
        await publish_raw(mosquitto.port, bad)
        await publish(mosquitto.port, stream, seqs[20:])
        await wait_until(
            lambda: influx_complete(influx, "e2e", expected, ("telemetry", "event", "harvest")),
            "every message in InfluxDB",
        )
        await wait_until(lambda: recorder.spool.points == 0, "spool empty")
        assert recorder.stats.refused == len(bad)
        assert recorder.stats.store_refused == 1
        assert recorder.spool.count("refused") == len(bad) + 1
        assert recorder.stats.replay_requests == 0  # bad messages break no sequence

    row = influx_rows(influx.url, "e2e", "SELECT * FROM telemetry WHERE seq = 1")[0]
    first = stream.messages[1][1]
    assert row["time"] == first["ts_ms"] * 1000 + 1
    assert (row["site"], row["reactor"], row["run_id"]) == (SITE, "ws1", first["run_id"])
    assert (row["o2_pct"], row["o2_quality"], row["pump_on"]) == (first["o2_pct"], "good", 1)
    alarm = influx_rows(influx.url, "e2e", "SELECT * FROM event WHERE kind = 'alarm'")[0]
    assert (alarm["subject"], alarm["to"]) == ("o2_high", "active_unacknowledged")
    assert json.loads(alarm["detail"])["priority"] == "high"
    harvest = influx_rows(influx.url, "e2e", "SELECT * FROM harvest")[0]
    assert (harvest["harvest"], harvest["exposure_s"], harvest["forced"]) == ("CM-24h", 86400, 0)


async def test_victoriametrics_through_the_v2_write_api(
    tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics
) -> None:
    stream = Stream()
    seqs = stream.add(30)
    expected = stream.kinds(seqs)
    store = f'kind = "influxdb2"\nurl = "{victoria.url}"'

    def numbers(metric: str) -> list[float]:
        victoria.flush()
        return sorted(v for s in vm_series(victoria.url, metric) for v in s["values"])

    async with recording(site_file(tmp_path, mosquitto.port, store)):
        await publish(mosquitto.port, stream, seqs)
        await publish(mosquitto.port, stream, seqs[:10], replay=True)  # duplicates: harmless
        await wait_until(
            lambda: (
                numbers("telemetry_seq") == expected["telemetry"]
                and numbers("event_seq") == expected["event"]
            ),
            "every message in VictoriaMetrics, once",
            timeout_s=15,
        )
    series = vm_series(victoria.url, "telemetry_o2_pct")
    assert len(series) == 1
    assert series[0]["metric"] == {
        "__name__": "telemetry_o2_pct",
        "site": SITE,
        "reactor": "ws1",
        "run_id": stream.messages[1][1]["run_id"],
        "phase": "hypoxic hold",
    }
    first = stream.messages[1][1]
    assert series[0]["timestamps"][0] == first["ts_ms"]  # VictoriaMetrics keeps milliseconds
    assert series[0]["values"][0] == first["o2_pct"]
    harvest = vm_series(victoria.url, "harvest_exposure_s")
    assert [s["values"] for s in harvest] == [[86400.0]]


async def test_store_outage_spools_then_drains_every_point_once(
    tmp_path: Path, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    stream = Stream()
    seqs = stream.add(120)
    expected = stream.kinds(seqs)
    async with recording(influx_site(tmp_path, mosquitto, influx, "outage")) as recorder:
        await publish(mosquitto.port, stream, seqs[:30])
        await wait_until(
            lambda: len(influx_seqs(influx, "outage", "telemetry")) >= 20, "first points stored"
        )
        influx.stop()
        try:
            await publish(mosquitto.port, stream, seqs[30:], pace_s=0.02)  # ~2 s outage
            # everything was acknowledged: it is in the spool, not in the broker
            await wait_until(lambda: recorder.stats.received >= len(seqs), "all received")
            assert recorder.spool.points > 0
            assert recorder.stats.store_failures > 0
        finally:
            influx.start()
        await wait_until(
            lambda: influx_complete(influx, "outage", expected),
            "spool drained into InfluxDB",
        )
        await wait_until(lambda: recorder.spool.points == 0, "spool empty")
    # exactly once per series and timestamp, in InfluxDB's own words
    counts = influx_rows(influx.url, "outage", "SELECT count(seq) FROM telemetry GROUP BY *")
    assert sum(r["count"] for r in counts) == len(expected["telemetry"])


async def test_full_spool_stops_acknowledging_and_the_broker_keeps_the_rest(
    tmp_path: Path, mosquitto: Mosquitto, influx: InfluxDB1
) -> None:
    stream = Stream()
    seqs = stream.add(80)
    expected = stream.kinds(seqs)
    site = influx_site(tmp_path, mosquitto, influx, "full", "max_spool_mb = 0.004")
    influx.stop()
    try:
        async with recording(site) as recorder:
            await publish(mosquitto.port, stream, seqs)
            await wait_until(
                lambda: recorder.spool.bytes >= recorder.spool_limit_bytes, "spool full"
            )
            await asyncio.sleep(0.3)
            received = recorder.stats.received
            assert received < len(seqs)  # the broker holds the rest back (its in-flight window)
            assert recorder.spool.bytes < recorder.spool_limit_bytes + 60_000
            # stopped while full: what was received but not spooled was never acknowledged
    finally:
        influx.start()
    async with recording(site) as recorder:
        await wait_until(
            lambda: influx_complete(influx, "full", expected),
            "everything stored after the restart",
        )
        assert recorder.stats.received >= len(seqs) - received
