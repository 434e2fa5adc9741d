"""Telemetry pipeline: sustained points per second, controller -> Mosquitto -> recorder -> store.

Real servers on loopback ports (the Debian packages the tests use: Mosquitto, InfluxDB 1.6.7,
VictoriaMetrics), started in a temporary directory the way ``tests/servers.py`` starts them. Every
stage moves the same messages: ``--reactors`` x ``--cycles`` telemetry messages built by
:func:`telemetry.messages.telemetry_message` (one control cycle of one reactor each, with noise),
and each round measures, one stage after another (order rotating between rounds; the publishing
side always in one child process, spawned once, the receiving side in this one):

* ``mqtt`` -- the raw MQTT limit: one aiomqtt client publishes the payloads at QoS 1 (up to
  ``--window`` publishes awaiting their PUBACK), another receives them on a QoS 1 subscription
  (aiomqtt's automatic acknowledgement, nothing else done);
* ``{store} raw`` -- the raw store limit: the points as line protocol rendered beforehand, written
  in batches of ``batch_size`` one after another (InfluxDB 1.x: aiohttp ``POST /write``;
  VictoriaMetrics: influxdb-client's async ``write_api``);
* ``{store} recorder writer`` -- the recorder's own store writer (:mod:`recorder.stores`) on the
  same batches of :class:`recorder.points.Point` (rendering included);
* ``controller link alone`` -- the service's :class:`controller.service.mqtt_link.MqttLink`
  emptying a run journal outbox filled beforehand through ``RunJournal.commit_cycle`` (not
  timed), nobody subscribed;
* ``{store} recorder alone`` -- a :class:`recorder.service.Recorder` (default ``[recorder]``
  settings) draining a backlog queued in its persistent broker session while it was away;
* ``{store} end to end`` -- ``MqttLink`` pumping its outbox -> Mosquitto -> ``Recorder`` ->
  store, timed from the link's start to the last point the store has acknowledged.

CPU time per point is taken for the link (its process) and the recorder (this process).

After each stage that writes, the points are counted in the store (every message is a point on its
own series and timestamp, so a count equal to the messages sent means none lost, none doubled).

Run: ``python bench/pipeline.py [--rounds 3] [--reactors 500] [--cycles 16] [--no-write]``; the
figures go to docs/performance.md between the ``bench:pipeline`` markers (``--only STAGES`` and
``--inflight N`` for a closer look: printed only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import json
import logging
import multiprocessing
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

from controller.service.app import open_state
from controller.service.clock import ScaledClock
from controller.service.commands import CommandProcessor
from controller.service.journal import OutboxMessage
from controller.service.mqtt_link import MqttLink
from controller.service.site import load_site
from recorder.intake import Accepted, Intake
from recorder.points import Point
from recorder.service import Recorder
from recorder.stores import MICROSECONDS, InfluxV1, InfluxV2, Store
from telemetry.config import InfluxDB1Store, InfluxDB2Store, RecorderConfig
from telemetry.messages import dumps, telemetry_message
from telemetry.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:pipeline:begin -->", "<!-- bench:pipeline:end -->"
TOPIC_ROOT = "hypoxia/v1"
STORES = ("influxdb1", "victoriametrics")
DATABASE = "bench"
TARGET_RATIO = 0.8
TARGET_REACTORS = 500
STAGE_TIMEOUT_S = 120.0


# ---- servers (the pattern of tests/servers.py: loopback, free ports, temporary data) -----------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:  # noqa: S310 - loopback only
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A server process on a loopback port, stopped with SIGTERM."""

    name: str
    root: Path
    port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL (HTTP servers)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, command: list[str], ready: Callable[[], bool]) -> None:
        """Start ``command`` and wait (20 s at most) until ``ready()``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                msg = f"{self.name} did not come up (log: {self.root / 'server.log'})"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def start_mosquitto(root: Path, inflight: int | None = None) -> Server:
    """Mosquitto with persistence and a deep queue, as tests/servers.py configures it.

    ``inflight``: ``max_inflight_messages`` (QoS 1 messages sent to a client and not yet
    acknowledged; Mosquitto's default, 20, when ``None``).
    """
    server = Server("mosquitto", root)
    conf = root / "mosquitto.conf"
    root.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        f"listener {server.port} 127.0.0.1\npersistence true\n"
        f"persistence_location {root}/\nmax_queued_messages 100000\n"
        f"user {getpass.getuser()}\nallow_anonymous true\n"
        + ("" if inflight is None else f"max_inflight_messages {inflight}\n")
    )
    server.start(["mosquitto", "-c", str(conf)], lambda: _port_open(server.port))
    return server


def start_influxdb(root: Path) -> Server:
    """InfluxDB 1.x (the Debian package: 1.6.7)."""
    server = Server("influxd", root)
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "influxdb.conf"
    conf.write_text(
        f'reporting-disabled = true\nbind-address = "127.0.0.1:{_free_port()}"\n'
        f'[meta]\n  dir = "{root}/meta"\n[data]\n  dir = "{root}/data"\n'
        f'  wal-dir = "{root}/wal"\n  query-log-enabled = false\n'
        f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{server.port}"\n'
        "  log-enabled = false\n[monitor]\n  store-enabled = false\n"
    )
    server.start(["influxd", "-config", str(conf)], lambda: _http_ok(f"{server.url}/ping"))
    return server


def start_victoriametrics(root: Path) -> Server:
    """VictoriaMetrics with millisecond deduplication (docs/recorder.md)."""
    server = Server("victoria-metrics", root)
    command = [
        "victoria-metrics",
        f"-storageDataPath={root}/data",
        f"-httpListenAddr=127.0.0.1:{server.port}",
        "-search.latencyOffset=0s",
        "-dedup.minScrapeInterval=1ms",
        "-loggerLevel=ERROR",
    ]
    server.start(command, lambda: _http_ok(f"{server.url}/health"))
    return server


# ---- the messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phase:
    """The phase a telemetry message shows (structural :class:`PhaseTargets`)."""

    name: str = "hypoxic hold"
    o2_pct: float | None = 2.0
    o2_basis: str = "gas"
    o2_band_pct: float = 0.2
    co2_pct: float | None = 5.0
    temp_c: float | None = 37.0


def reactor_ids(count: int) -> list[str]:
    """``r0001`` ... (sorted as the outbox pumps them)."""
    return [f"r{i:04d}" for i in range(1, count + 1)]


def telemetry_outbox(
    site: str, run_tag: str, reactors: int, cycles: int, seed: int = 1
) -> list[list[OutboxMessage]]:
    """Per control cycle (1 s apart, ending now), every reactor's telemetry message."""
    rng = random.Random(seed)
    topics = Topics(TOPIC_ROOT, site)
    end = datetime.now(UTC).replace(microsecond=0)
    phase = _Phase()
    ticks: list[list[OutboxMessage]] = []
    for c in range(cycles):
        utc = end - timedelta(seconds=cycles - c)
        tick = []
        for rid in reactor_ids(reactors):
            readings = {
                "o2": {"value": 2.0 + rng.gauss(0, 0.02), "quality": "good"},
                "co2": {"value": 5.0 + rng.gauss(0, 0.02), "quality": "good"},
                "temperature": {"value": 37.0 + rng.gauss(0, 0.01), "quality": "good"},
            }
            actuation = {
                "n2_lpm": 0.9 + rng.random() * 0.02,
                "air_lpm": 0.0,
                "o2_lpm": 0.0,
                "co2_lpm": 0.05,
                "heater_w": 130 + rng.random(),
                "pump_on": False,
            }
            message = telemetry_message(
                site,
                rid,
                c + 1,
                utc,
                f"{rid}-{run_tag}",
                phase,
                "running",
                3600.0 + c,
                3000.0 + c,
                readings,
                actuation,
                0,
            )
            tick.append(OutboxMessage(rid, c + 1, topics.telemetry(rid), dumps(message)))
        ticks.append(tick)
    return ticks


def as_points(site: str, ticks: list[list[OutboxMessage]]) -> list[Point]:
    """The store points of the messages, as the recorder's intake makes them."""
    intake = Intake(TOPIC_ROOT, site)
    points: list[Point] = []
    for tick in ticks:
        for message in tick:
            item = intake.parse(message.topic, message.payload.encode())
            if not isinstance(item, Accepted):
                raise TypeError(item)
            points += item.points
    return points


# ---- the child process: the publishing side of every stage -----------------------------------


async def raw_publish(
    port: int, site: str, run_tag: str, shape: tuple[int, int], window: int
) -> tuple[float, ...]:
    """Publish every message at QoS 1, ``window`` awaiting PUBACK at a time; ``(start,)``."""
    ticks = telemetry_outbox(site, run_tag, *shape)
    messages = [(m.topic, m.payload.encode()) for tick in ticks for m in tick]
    slots = asyncio.Semaphore(window)

    async def one(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=1, timeout=60)
        finally:
            slots.release()

    t0 = time.monotonic()
    async with (
        aiomqtt.Client("127.0.0.1", port, max_inflight_messages=window) as client,
        asyncio.TaskGroup() as tasks,
    ):
        for topic, payload in messages:
            await slots.acquire()
            tasks.create_task(one(client, topic, payload))
    return (t0,)


async def controller_pump(
    site_path: str, run_tag: str, shape: tuple[int, int]
) -> tuple[float, ...]:
    """The controller's MQTT link pumping a full journal outbox (filled first, not timed).

    Returns ``(start, all acknowledged, CPU microseconds per message)``.
    """
    site = load_site(Path(site_path))
    journal, audit = open_state(site)
    ticks = telemetry_outbox(site.site, run_tag, *shape)
    run_id = journal.start_run(ticks[0][0].reactor, "bench", "0" * 64, "", datetime.now(UTC))
    for tick in ticks:  # one transaction per tick, as a tick of the service commits its cycles
        journal.commit_cycle(run_id, datetime.now(UTC), 0.0, {}, {}, [], tick)
    clock = ScaledClock(1.0)
    processor = CommandProcessor(site, {}, audit, clock)
    link = MqttLink(site.broker, Topics(site.broker.root, site.site), journal, {}, processor, clock)
    stop = asyncio.Event()
    total = sum(len(tick) for tick in ticks)
    t0, cpu0 = time.monotonic(), time.process_time()
    task = asyncio.create_task(link.run(stop))
    idle = asyncio.create_task(link.idle.wait())  # set once the whole outbox is acknowledged
    await asyncio.wait({idle, task}, return_when=asyncio.FIRST_COMPLETED)
    if link.published < total:
        msg = f"the link published {link.published} of {total} messages"
        raise RuntimeError(msg)
    done, cpu_us = time.monotonic(), (time.process_time() - cpu0) / total * 1e6
    stop.set()
    await task
    journal.close()
    audit.conn.close()
    return (t0, done, cpu_us)


JOBS: dict[str, Callable[..., Coroutine[Any, Any, tuple[float, ...]]]] = {
    "raw": raw_publish,
    "pump": controller_pump,
}


def worker(jobs: Queue[tuple[str, tuple[Any, ...]] | None], results: Queue[Any]) -> None:
    """Child process: run publishing jobs one after another (spawned once, imports paid once).

    Puts each job's tuple of floats, or the text of its error, on ``results``.
    """
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # "There are N pending publish calls"
    while (job := jobs.get()) is not None:
        name, args = job
        try:
            results.put(asyncio.run(JOBS[name](*args)))
        except Exception as exc:  # reported by the parent
            results.put(f"{name}: {exc!r}")


# ---- measuring --------------------------------------------------------------------------------


@dataclass
class Progress:
    """Points through a stage over time: ``(monotonic s, points so far)`` samples."""

    total: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, count: int) -> None:
        """``count`` more points are through, now."""
        done = self.samples[-1][1] if self.samples else 0
        self.samples.append((time.monotonic(), done + count))

    @property
    def done(self) -> int:
        """Points through so far."""
        return self.samples[-1][1] if self.samples else 0

    def sustained(self) -> float:
        """Points per second between 10 % and 90 % of the total (start-up and tail left out)."""
        lo = next((t, n) for t, n in self.samples if n >= 0.1 * self.total)
        hi = next((t, n) for t, n in self.samples if n >= 0.9 * self.total)
        return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else float("nan")


@dataclass
class StageResult:
    """One stage of one round."""

    stage: str
    rate: float
    """Sustained points per second (10-90 %)."""
    whole_s: float
    """From the first publish (or write) to the last point through, s."""
    points: int
    counted: int | None = None
    """Points counted in the store afterwards (``None``: not a store stage)."""
    note: str = ""
    cpu_us: float | None = None
    """CPU time of the recorder's process per point, microseconds (recorder stages)."""
    link_cpu_us: float | None = None
    """CPU time of the controller link's process per point, microseconds (link stages)."""


class CountingStore(Store):
    """A store that notes every acknowledged write in a :class:`Progress`."""

    def __init__(self, inner: Store, progress: Progress) -> None:
        self.inner = inner
        self.progress = progress
        self.description = inner.description

    async def open(self) -> None:
        """Open the store."""
        await self.inner.open()

    async def write(self, points: Sequence[Point]) -> None:
        """Write, then note the points as through."""
        await self.inner.write(points)
        self.progress.add(len(points))

    async def close(self) -> None:
        """Close the store."""
        await self.inner.close()


async def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"{what}: not within {timeout_s:.0f} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.01)


def _get_json(url: str, params: dict[str, str]) -> Any:
    full = f"{url}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(full, timeout=30) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def count_points(store: str, server: Server, site: str, expected: int) -> int:
    """Telemetry points of ``site`` held by the store (each message is one).

    Asked again for up to 15 s while fewer than ``expected`` show: VictoriaMetrics makes rows
    searchable a moment after acknowledging them.
    """
    deadline = time.monotonic() + 15
    while (count := _count_once(store, server, site)) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return count


def _count_once(store: str, server: Server, site: str) -> int:
    if store == "influxdb1":
        query = f"SELECT count(seq) FROM telemetry WHERE site = '{site}'"  # noqa: S608
        data = _get_json(f"{server.url}/query", {"db": DATABASE, "q": query})
        series = data["results"][0].get("series") or [{"values": [[0, 0]]}]
        return int(series[0]["values"][0][1])
    with contextlib.suppress(urllib.error.URLError, OSError):
        urllib.request.urlopen(f"{server.url}/internal/force_flush", timeout=10).close()  # noqa: S310
    query = f'sum(count_over_time(telemetry_seq{{site="{site}"}}[1d]))'
    data = _get_json(f"{server.url}/api/v1/query", {"query": query, "nocache": "1"})
    result = data["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


@dataclass
class Bench:
    """The servers and the run's shape."""

    tmp: Path
    mqtt: Server
    stores: dict[str, Server]
    reactors: int
    cycles: int
    window: int
    recorder: RecorderConfig
    spawn: Any = field(default_factory=lambda: multiprocessing.get_context("spawn"))
    jobs: Any = None
    results: Any = None
    child: Any = None

    def start_worker(self) -> None:
        """Spawn the publishing child process."""
        self.jobs, self.results = self.spawn.Queue(), self.spawn.Queue()
        self.child = self.spawn.Process(target=worker, args=(self.jobs, self.results))
        self.child.start()

    def stop_worker(self) -> None:
        """End the publishing child process."""
        if self.child is not None:
            self.jobs.put(None)
            self.child.join(timeout=30)
            if self.child.is_alive():
                self.child.kill()
            self.child = None

    def submit(self, name: str, *args: object) -> None:
        """Start a job in the child process."""
        self.jobs.put((name, args))

    async def outcome(self) -> tuple[float, ...]:
        """The result of the job submitted last (``RuntimeError`` if it failed)."""
        result = await asyncio.to_thread(self.results.get, True, STAGE_TIMEOUT_S)
        if isinstance(result, str):
            raise RuntimeError(result)
        return tuple(result)

    @property
    def total(self) -> int:
        """Messages (= points) per stage."""
        return self.reactors * self.cycles

    def store_config(self, store: str) -> InfluxDB1Store | InfluxDB2Store:
        """The ``[recorder.store]`` of a store."""
        url = self.stores[store].url
        if store == "influxdb1":
            return InfluxDB1Store(kind="influxdb1", url=url, database=DATABASE)
        return InfluxDB2Store(kind="influxdb2", url=url, org=DATABASE, bucket=DATABASE)

    async def mqtt_raw(self, tag: str) -> StageResult:
        """aiomqtt QoS 1 publish -> Mosquitto -> aiomqtt QoS 1 subscription, nothing else."""
        progress = Progress(self.total)
        async with aiomqtt.Client("127.0.0.1", self.mqtt.port, identifier=f"sub-{tag}") as sub:
            await sub.subscribe(f"{TOPIC_ROOT}/{tag}/+/telemetry", qos=1)
            self.submit("raw", self.mqtt.port, tag, tag, (self.reactors, self.cycles), self.window)
            async with asyncio.timeout(STAGE_TIMEOUT_S):
                async for _ in sub.messages:
                    progress.add(1)
                    if progress.done >= self.total:
                        break
        (t0,) = await self.outcome()
        return StageResult(
            "mqtt",
            progress.sustained(),
            progress.samples[-1][0] - t0,
            self.total,
            note=f"window {self.window}",
        )

    async def store_raw(self, store: str, tag: str, *, library: bool) -> StageResult:
        """Batches of ``batch_size`` points written one after another, straight to the store."""
        points = as_points(tag, telemetry_outbox(tag, tag, self.reactors, self.cycles))
        size = self.recorder.batch_size
        batches = [points[i : i + size] for i in range(0, len(points), size)]
        progress = Progress(len(points))
        config = self.store_config(store)
        if library:
            bodies = ["\n".join(p.line() for p in batch) for batch in batches]
            write = await self._library_writer(store, config)
            t0 = time.monotonic()
            for body, batch in zip(bodies, batches, strict=True):
                await write(body)
                progress.add(len(batch))
            await write(None)
            stage = f"{store} raw"
        else:
            writer: Store = (
                InfluxV1(config) if isinstance(config, InfluxDB1Store) else InfluxV2(config)
            )
            await writer.open()
            t0 = time.monotonic()
            for batch in batches:
                await writer.write(batch)
                progress.add(len(batch))
            await writer.close()
            stage = f"{store} recorder writer"
        counted = count_points(store, self.stores[store], tag, self.total)
        return StageResult(
            stage, progress.sustained(), progress.samples[-1][0] - t0, len(points), counted
        )

    async def _library_writer(
        self, store: str, config: InfluxDB1Store | InfluxDB2Store
    ) -> Callable[[str | None], Awaitable[None]]:
        """``write(body)``; ``write(None)`` closes."""
        if isinstance(config, InfluxDB1Store):
            session = aiohttp.ClientSession()
            await session.post(f"{config.url}/query", params={"q": f"CREATE DATABASE {DATABASE}"})
            params = {"db": DATABASE, "precision": "u"}

            async def write_v1(body: str | None) -> None:
                if body is None:
                    await session.close()
                    return
                async with session.post(f"{config.url}/write", params=params, data=body) as resp:
                    resp.raise_for_status()

            return write_v1
        client = InfluxDBClientAsync(config.url, token="", org=config.org)
        api = client.write_api()

        async def write_v2(body: str | None) -> None:
            if body is None:
                await client.close()
                return
            await api.write(config.bucket, config.org, record=body, write_precision=MICROSECONDS)

        return write_v2

    def site_file(self, store: str, tag: str) -> Path:
        """A site file (the example site, renamed) with the broker and this store."""
        text = (ROOT / "examples/sites/sim.toml").read_text()
        text = text.replace('site = "sim"', f'site = "{tag}"', 1)
        text = text.replace("/tmp/hypoxia-sim/state", str(self.tmp / tag / "state"))  # noqa: S108
        config = self.store_config(store)
        store_lines = "\n".join(
            f"{key} = {json.dumps(value)}"
            for key, value in config.model_dump(exclude_none=True).items()
        )
        rec = self.recorder
        text += (
            f'\n[broker]\nhost = "127.0.0.1"\nport = {self.mqtt.port}\n\n'
            f"[recorder]\nbatch_size = {rec.batch_size}\n"
            f"batch_interval_s = {rec.batch_interval_s}\n\n[recorder.store]\n{store_lines}\n"
        )
        path = self.tmp / tag / "site.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    async def _recorder(
        self, path: Path, during: Callable[[], Awaitable[None]] | None
    ) -> tuple[Recorder, Progress, float, float]:
        """Run a recorder of ``path``: once subscribed, ``during()`` then wait for every point.

        Without ``during`` it only connects and subscribes (which creates its broker session).
        Returns the recorder, its progress, when the wait began and CPU microseconds per point.
        """
        recorder = Recorder(load_site(path), report_every_s=3600.0)
        progress = Progress(self.total)
        recorder.store = CountingStore(recorder.store, progress)
        stop = asyncio.Event()
        task = asyncio.create_task(recorder.run(stop))
        t0 = cpu_us = 0.0
        try:
            await _wait_for(lambda: recorder.subscribed.is_set() or task.done(), "subscribed", 20)
            if during is not None:
                await during()
                t0, cpu0 = time.monotonic(), time.process_time()
                await _wait_for(
                    lambda: progress.done >= self.total or task.done(),
                    "every point in the store",
                    STAGE_TIMEOUT_S,
                )
                cpu_us = (time.process_time() - cpu0) / self.total * 1e6
        finally:
            stop.set()
            await task
        return recorder, progress, t0, cpu_us

    async def end_to_end(self, store: str, tag: str) -> StageResult:
        """Controller's MQTT link (child process) -> Mosquitto -> recorder -> store."""
        path = self.site_file(store, tag)

        async def pump() -> None:
            self.submit("pump", str(path), tag, (self.reactors, self.cycles))

        recorder, progress, _, cpu_us = await self._recorder(path, pump)
        t0, t_published, link_cpu = await self.outcome()
        counted = count_points(store, self.stores[store], tag, self.total)
        stats = recorder.stats
        note = (
            f"link published all in {t_published - t0:.1f} s; "
            f"{stats.store_writes} store writes, "
            f"{stats.duplicates} duplicates, {stats.replay_requests} replay requests"
        )
        whole = progress.samples[-1][0] - t0
        return StageResult(
            f"{store} end to end",
            progress.sustained(),
            whole,
            self.total,
            counted,
            note,
            cpu_us,
            link_cpu,
        )

    async def link_alone(self, tag: str) -> StageResult:
        """The controller's MQTT link emptying its outbox into Mosquitto, nobody subscribed."""
        path = self.site_file(STORES[0], tag)
        self.submit("pump", str(path), tag, (self.reactors, self.cycles))
        t0, t_published, link_cpu = await self.outcome()
        return StageResult(
            "controller link alone",
            self.total / (t_published - t0),
            t_published - t0,
            self.total,
            note="whole run (no 10-90 % samples across processes)",
            link_cpu_us=link_cpu,
        )

    async def recorder_alone(self, store: str, tag: str) -> StageResult:
        """The recorder draining a backlog its persistent session holds in Mosquitto."""
        path = self.site_file(store, tag)
        await self._recorder(path, None)  # creates the session; then fill it while away
        self.submit("raw", self.mqtt.port, tag, tag, (self.reactors, self.cycles), self.window)
        await self.outcome()

        async def nothing() -> None:
            return

        _, progress, t0, cpu_us = await self._recorder(path, nothing)
        counted = count_points(store, self.stores[store], tag, self.total)
        return StageResult(
            f"{store} recorder alone",
            progress.sustained(),
            progress.samples[-1][0] - t0,
            self.total,
            counted,
            "backlog queued in its broker session beforehand",
            cpu_us,
        )


# ---- rounds, report ----------------------------------------------------------------------------


def points_per_cycle() -> tuple[int, int]:
    """Points, and fields of each, that one reactor's telemetry message of one cycle makes."""
    ticks = telemetry_outbox("sim", "x", 1, 1)
    points = as_points("sim", ticks)
    return len(points), len(points[0].fields)


async def run_round(
    bench: Bench, index: int, stores: Sequence[str], only: Sequence[str] = ()
) -> list[StageResult]:
    """Every stage (or those named in ``only``) once, in an order rotated by ``index``."""
    stages: list[tuple[str, Callable[[str], Awaitable[StageResult]]]] = [
        ("mqtt", bench.mqtt_raw),
        ("link", bench.link_alone),
    ]
    for store in stores:
        short = "i1" if store == "influxdb1" else "vm"
        stages += [
            (f"{short}-raw", functools.partial(bench.store_raw, store, library=True)),
            (f"{short}-wri", functools.partial(bench.store_raw, store, library=False)),
            (f"{short}-rec", functools.partial(bench.recorder_alone, store)),
            (f"{short}-e2e", functools.partial(bench.end_to_end, store)),
        ]
    stages = [(name, stage) for name, stage in stages if not only or name in only]
    shift = index % len(stages)
    results = []
    for name, stage in stages[shift:] + stages[:shift]:
        result = await stage(f"b{index}-{name}")
        link_cpu = result.link_cpu_us
        print(
            f"  round {index}: {result.stage:<32} {result.rate:9,.0f} points/s"
            f"  ({result.points:,} in {result.whole_s:.1f} s"
            f"{'' if result.counted is None else f'; store holds {result.counted:,}'}"
            f"{'' if result.cpu_us is None else f'; recorder CPU {result.cpu_us:.0f} us/point'}"
            f"{'' if link_cpu is None else f'; link CPU {link_cpu:.0f} us/point'})"
            f"{'  ' + result.note if result.note else ''}",
            flush=True,
        )
        results.append(result)
    return results


def summarise(rounds: list[list[StageResult]], stores: Sequence[str]) -> dict[str, Any]:
    """Medians per stage; per store the end-to-end and recorder ratios to the slower raw stage."""
    by_stage: dict[str, list[StageResult]] = {}
    for results in rounds:
        for r in results:
            by_stage.setdefault(r.stage, []).append(r)
    median = {k: statistics.median(r.rate for r in v) for k, v in by_stage.items()}
    lossless = all(r.counted in (None, r.points) for v in by_stage.values() for r in v)
    per_store = {}
    for store in stores:
        e2e, alone = [], []
        for results in rounds:
            rate = {r.stage: r.rate for r in results}
            slower = min(rate["mqtt"], rate[f"{store} raw"])
            e2e.append(rate[f"{store} end to end"] / slower)
            alone.append(rate[f"{store} recorder alone"] / slower)
        link, recorder = median["controller link alone"], median[f"{store} recorder alone"]
        per_store[store] = {
            "ratio": statistics.median(e2e),
            "ratios": e2e,
            "recorder_ratio": statistics.median(alone),
            "raw_limit": "mqtt" if median["mqtt"] < median[f"{store} raw"] else f"{store} raw",
            "slowest": "the controller's MQTT link" if link < recorder else "the recorder",
        }
    return {"median": median, "by_stage": by_stage, "lossless": lossless, "stores": per_store}


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}".replace(",", " ")


def report(summary: dict[str, Any], bench: Bench, rounds: int, command: str) -> str:
    """The markdown block for docs/performance.md."""
    median, by_stage = summary["median"], summary["by_stage"]
    points, fields = points_per_cycle()
    need = TARGET_REACTORS * points
    lines = [
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on this 2-core machine (shared with "
        f"other work: absolute rates vary from run to run, ratios less) by `{command}`: "
        f"{rounds} rounds, each stage moving {bench.total:,} telemetry messages "
        f"({bench.reactors} reactors x {bench.cycles} cycles; one reactor-cycle = {points} "
        f"point of {fields} fields, so {TARGET_REACTORS} reactors at 1 s need {need} points/s). "
        "Controller side: the service's `MqttLink` pumping the run journal's outbox (one "
        "process); recorder: `Recorder` with batch_size "
        f"{bench.recorder.batch_size}, batch_interval_s {bench.recorder.batch_interval_s} (the "
        "defaults), in the bench's process. Sustained rate = slope between 10 % and 90 % of the "
        "points; medians of the rounds.",
        "",
        "| stage | points/s (median) | each round | CPU per point: link / recorder "
        "| 500 reactors x |",
        "|---|---|---|---|---|",
    ]
    for stage, results in by_stage.items():
        rates = ", ".join(_fmt(r.rate) for r in results)
        cpu = " / ".join(
            f"{statistics.median(values):.0f} us" if values else "-"
            for values in (
                [r.link_cpu_us for r in results if r.link_cpu_us is not None],
                [r.cpu_us for r in results if r.cpu_us is not None],
            )
        )
        cpu = "" if cpu == "- / -" else cpu
        lines.append(
            f"| {stage} | **{_fmt(median[stage])}** | {rates} | {cpu} "
            f"| {median[stage] / need:.1f} |"
        )
    lines += [
        "",
        "| store | end to end / slower raw stage (median; each round) | recorder alone / slower "
        "raw stage | slower raw stage | slowest pipeline stage | target |",
        "|---|---|---|---|---|---|",
    ]
    for store, s in summary["stores"].items():
        lines.append(
            f"| {store} | **{s['ratio']:.2f}** ({', '.join(f'{x:.2f}' for x in s['ratios'])}) "
            f"| {s['recorder_ratio']:.2f} | {s['raw_limit']} | {s['slowest']} "
            f"| >= {TARGET_RATIO} |"
        )
    lines += [
        "",
        "Every store stage counted afterwards: "
        + (
            "every message in the store exactly once (zero loss)."
            if summary["lossless"]
            else "**points missing or doubled** (see the run's output)."
        ),
        END,
    ]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    """Replace the block between the markers (or append a section)."""
    text = DOC.read_text()
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Telemetry pipeline (issue 15)\n\n" + block + "\n"
    DOC.write_text(text)


@contextlib.contextmanager
def servers(
    tmp: Path, stores: Sequence[str], inflight: int | None
) -> Iterator[tuple[Server, dict[str, Server]]]:
    """Mosquitto and the stores, stopped on leaving."""
    started: list[Server] = []
    try:
        started.append(start_mosquitto(tmp / "mosquitto", inflight))
        found: dict[str, Server] = {}
        for store in stores:
            start = start_influxdb if store == "influxdb1" else start_victoriametrics
            found[store] = start(tmp / store)
            started.append(found[store])
        yield started[0], found
    finally:
        for server in reversed(started):
            server.stop()


async def main(args: argparse.Namespace) -> int:
    """Run the rounds; print (and write) the report; 0 when nothing was lost."""
    stores = [s for s in STORES if s in args.stores.split(",")]
    missing = [b for b in ("mosquitto", "influxd", "victoria-metrics") if not shutil.which(b)]
    if missing:
        print(f"needs {', '.join(missing)} (the Debian packages scripts/test installs)")
        return 2
    recorder = RecorderConfig()
    if args.batch_size:
        recorder = recorder.model_copy(update={"batch_size": args.batch_size})
    points, fields = points_per_cycle()
    print(
        f"one reactor-cycle: {points} telemetry point(s) of {fields} fields; "
        f"{TARGET_REACTORS} reactors at 1 s = {TARGET_REACTORS * points} points/s"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-") as name,
        servers(Path(name), stores, args.inflight) as (mqtt, found),
    ):
        bench = Bench(Path(name), mqtt, found, args.reactors, args.cycles, args.window, recorder)
        bench.start_worker()
        try:
            only = [o for o in args.only.split(",") if o]
            rounds = [await run_round(bench, i, stores, only) for i in range(1, args.rounds + 1)]
        finally:
            bench.stop_worker()
    if only:  # a look at some stages: printed above, no summary, nothing written
        lossless = all(r.counted in (None, r.points) for results in rounds for r in results)
        return 0 if lossless else 1
    summary = summarise(rounds, stores)
    command = "python bench/pipeline.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    block = report(summary, bench, args.rounds, command)
    print(block)
    if not args.no_write:
        write_doc(block)
    return 0 if summary["lossless"] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reactors", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=16, help="messages per reactor per stage")
    parser.add_argument("--window", type=int, default=20, help="raw publisher: PUBACKs awaited")
    parser.add_argument("--batch-size", type=int, default=0, help="default: the recorder's")
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/performance.md")
    parser.add_argument(
        "--only",
        default="",
        help="only these stages (mqtt, link, i1-raw, i1-wri, i1-rec, i1-e2e, "
        "vm-...): printed, no summary, nothing written",
    )
    parser.add_argument(
        "--inflight", type=int, default=None, help="Mosquitto max_inflight_messages (default 20)"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
