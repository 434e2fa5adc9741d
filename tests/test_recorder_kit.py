"""Test kit for the recorder (no tests here): a site file on real servers, a controller-like
publisher that follows docs/mqtt.md (seq numbers, an outbox that answers replay requests),
the recorder running in-process, and read-back from each store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from controller.service.site import load_site
from recorder.gaps import ReplayPolicy
from recorder.service import Recorder

ROOT = Path(__file__).resolve().parent.parent
TOPIC_ROOT = "hypoxia/v1"
SITE = "sim"
FAST = ReplayPolicy(grace_s=0.2, retry_s=0.4, retry_max_s=1.0, max_requests=4)


def site_file(tmp: Path, mqtt_port: int, store: str, recorder: str = "") -> Path:
    """The example site with a ``[broker]`` on ``mqtt_port`` and the given recorder store."""
    text = (ROOT / "examples/sites/sim.toml").read_text()
    text = text.replace("/tmp/hypoxia-sim/state", str(tmp / "state"))  # noqa: S108 - replaced
    text += (
        f'\n[broker]\nhost = "127.0.0.1"\nport = {mqtt_port}\n\n'
        f"[recorder]\nbatch_interval_s = 0.1\n{recorder}\n\n[recorder.store]\n{store}\n"
    )
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "site.toml"
    path.write_text(text)
    return path


EVENT_DETAILS: list[tuple[str, dict[str, Any]]] = [
    ("phase_start", {"phase": "hypoxic hold", "o2_pct": 2.0}),
    (
        "alarm",
        {
            "alarm": "o2_high",
            "priority": "high",
            "from": "normal",
            "to": "active_unacknowledged",
            "why": "o2 2.6 % > band",
            "message": "O2 above band",
        },
    ),
    (
        "harvest_due",
        {
            "name": "CM-24h",
            "exposure_s": 86400.0,
            "o2_mean_pct": 2.0,
            "in_band_frac": 0.999,
            "excursions": 0,
            "dose_error_pct_h": 0.38,
        },
    ),
    ("note", {"text": "medium topped up"}),
]


@dataclass
class Stream:
    """One reactor's messages as the controller's outbox holds them: seq -> (topic, payload)."""

    reactor: str = "ws1"
    t0_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 3_600_000)
    messages: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    cycles: int = 0

    def topic(self, kind: str) -> str:
        return f"{TOPIC_ROOT}/{SITE}/{self.reactor}/{kind}"

    def add(self, cycles: int, event_every: int = 5) -> list[int]:
        """``cycles`` control cycles: a telemetry message each, and an event every few."""
        added: list[int] = []
        for _ in range(cycles):
            c = self.cycles
            self.cycles += 1
            base = {"v": 1, "ts_ms": self.t0_ms + c * 1000, "site": SITE, "reactor": self.reactor}
            base["run_id"] = f"{self.reactor}-20261127T080000Z-1a2b3c"
            seq = len(self.messages) + 1
            self.messages[seq] = (self.topic("telemetry"), {**base, "seq": seq, **_telemetry(c)})
            added.append(seq)
            if c % event_every == event_every - 1:
                kind, detail = EVENT_DETAILS[(c // event_every) % len(EVENT_DETAILS)]
                seq += 1
                payload = {**base, "seq": seq, "t_s": float(c), "kind": kind, "detail": detail}
                self.messages[seq] = (self.topic("event"), payload)
                added.append(seq)
        return added

    def kinds(self, seqs: Iterable[int]) -> dict[str, list[int]]:
        """Sequence numbers by measurement they land in (telemetry, event, harvest)."""
        out: dict[str, list[int]] = {"telemetry": [], "event": [], "harvest": []}
        for seq in seqs:
            topic, payload = self.messages[seq]
            out[topic.rsplit("/", 1)[1]].append(seq)
            if payload.get("kind") == "harvest_due":
                out["harvest"].append(seq)
        return out


def _telemetry(c: int) -> dict[str, Any]:
    return {
        "phase": "hypoxic hold",
        "phase_state": "running",
        "t_s": float(c),
        "exposure_s": float(c) * 0.9,
        "o2_pct": round(2.0 + 0.01 * (c % 7), 3),
        "o2_quality": "good",
        "o2_sp_pct": 2.0,
        "o2_band_pct": 0.2,
        "co2_pct": 5.02,
        "co2_quality": "good",
        "co2_sp_pct": 5.0,
        "temp_c": 37.01,
        "temp_quality": "good",
        "temp_sp_c": 37.0,
        "do_pct": None,
        "do_quality": None,
        "n2_lpm": 0.91,
        "air_lpm": 0.0,
        "o2_lpm": 0.0,
        "co2_lpm": 0.05,
        "heater_w": 131.0,
        "pump_on": c % 2 == 0,
        "alarms_active": c % 3,
    }


async def publish(
    port: int, stream: Stream, seqs: Iterable[int], *, replay: bool = False, pace_s: float = 0.0
) -> None:
    """Publish messages (QoS 1) once; ``replay`` marks them as the controller does."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for seq in seqs:
            topic, payload = stream.messages[seq]
            body = {**payload, "replay": True} if replay else payload
            await client.publish(topic, json.dumps(body), qos=1)
            if pace_s:
                await asyncio.sleep(pace_s)


async def publish_raw(port: int, items: Iterable[tuple[str, bytes]]) -> None:
    """Publish raw payloads (bad messages)."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)


async def publish_through_outages(
    port: int, stream: Stream, seqs: list[int], pace_s: float = 0.005
) -> None:
    """Publish like the controller's outbox: a message leaves only once the broker acked it."""
    pending = list(seqs)
    while pending:
        try:
            async with aiomqtt.Client("127.0.0.1", port, timeout=2.0) as client:
                while pending:
                    topic, payload = stream.messages[pending[0]]
                    await client.publish(topic, json.dumps(payload), qos=1, timeout=2.0)
                    pending.pop(0)
                    await asyncio.sleep(pace_s)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


@asynccontextmanager
async def replay_answerer(
    port: int, stream: Stream, answer: Callable[[dict[str, Any], int], bool]
) -> AsyncIterator[list[dict[str, Any]]]:
    """Answer replay requests from ``stream`` when ``answer(request, n_seen)``; yields requests."""
    requests: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def serve() -> None:
        while True:  # across broker restarts, like the controller
            with contextlib.suppress(aiomqtt.MqttError):
                async with aiomqtt.Client("127.0.0.1", port) as client:
                    await client.subscribe(f"{TOPIC_ROOT}/{SITE}/replay/request", qos=1)
                    ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        request = json.loads(message.payload)
                        requests.append(request)
                        if answer(request, len(requests)):
                            await _replay(client, stream, request)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(serve())
    await wait_until(lambda: ready.is_set() or task.done(), "replay answerer subscribed")
    try:
        yield requests
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _replay(client: aiomqtt.Client, stream: Stream, request: dict[str, Any]) -> None:
    wanted = range(request["from_seq"], request["to_seq"] + 1)
    for seq in (s for s in wanted if s in stream.messages):
        topic, payload = stream.messages[seq]
        await client.publish(topic, json.dumps({**payload, "replay": True}), qos=1)


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` every 50 ms until true; ``TimeoutError`` naming ``what`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            msg = f"{what}: not within {timeout_s} s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)


@asynccontextmanager
async def recording(site_path: Path, **kwargs: Any) -> AsyncIterator[Recorder]:
    """The recorder of a site, running in this loop until the block ends (then stopped)."""
    options: dict[str, Any] = {
        "policy": FAST,
        "store_retry_max_s": 0.5,
        "reconnect_max_s": 0.5,
        "report_every_s": 3600.0,
    }
    recorder = Recorder(load_site(site_path), **(options | kwargs))
    stop = asyncio.Event()
    task = asyncio.create_task(recorder.run(stop))
    try:
        await wait_until(lambda: recorder.subscribed.is_set() or task.done(), "subscribed")
        if task.done():
            task.result()
        yield recorder
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


# ---- reading back ---------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def influx_rows(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """InfluxQL query -> rows as dicts (time in microseconds); ``[]`` when unreachable."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "u"})
    try:
        data = _get_json(f"{url}/query?{params}")
    except OSError:
        return []
    rows: list[dict[str, Any]] = []
    for result in data.get("results", []):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            rows += [
                {**tags, **dict(zip(series["columns"], v, strict=True))} for v in series["values"]
            ]
    return rows


def influx_write(url: str, database: str, lines: str) -> None:
    """Create a database and write line protocol into it directly (microseconds)."""
    for path, params, body in (
        ("/query", {"q": f'CREATE DATABASE "{database}"'}, b""),
        ("/write", {"db": database, "precision": "u"}, lines.encode()),
    ):
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{url}{path}?{urllib.parse.urlencode(params)}", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback only
            pass


def vm_series(url: str, metric: str) -> list[dict[str, Any]]:
    """VictoriaMetrics ``/api/v1/export`` of one metric name (all its series)."""
    params = urllib.parse.urlencode({"match[]": f'{{__name__="{metric}"}}'})
    with urllib.request.urlopen(f"{url}/api/v1/export?{params}", timeout=5) as resp:  # noqa: S310
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def sqlite_seqs(path: Path, measurement: str) -> list[int]:
    """``seq`` of every point in a SQLite store (``[]`` before the file exists)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            rows = db.execute(
                "SELECT json_extract(fields, '$.seq') FROM points WHERE measurement LIKE ? "
                "ORDER BY time_us",
                (measurement,),
            ).fetchall()
        except sqlite3.OperationalError:  # table not created yet
            return []
    return [int(r[0]) for r in rows]
