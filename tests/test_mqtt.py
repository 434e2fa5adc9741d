"""The controller's MQTT side against a real Mosquitto with the example password file and ACL:
complete, ordered telemetry and events; commands by role; malformed commands; broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from controller.service.audit import AuditTrail
from tests.servers import Mosquitto
from tests.service_kit import ROOT, site_file

pytestmark = pytest.mark.skipif(not Mosquitto.available(), reason="mosquitto not installed")

SPEED = "30"
EXAMPLE = ROOT / "examples/mosquitto"
BASE = "hypoxia/v1/sim"


def password(user: str) -> str:
    """Passwords of the example password file."""
    return f"{user}-example-password"


@dataclass
class Collected:
    """What a subscriber saw."""

    telemetry: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    status: list[str] = field(default_factory=list)


async def _collect(port: int, user: str, out: Collected, stop: asyncio.Event) -> None:
    """Subscribe as ``user`` (persistent session), reconnecting across broker restarts."""
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                port,
                username=user,
                password=password(user),
                identifier=f"test-{user}",
                clean_session=False,
            ) as client:
                await client.subscribe(f"{BASE}/#", qos=1)
                async for msg in client.messages:
                    topic = str(msg.topic)
                    payload = msg.payload if isinstance(msg.payload, bytes) else b""
                    if topic.endswith("/telemetry"):
                        out.telemetry.append(json.loads(payload))
                    elif topic.endswith("/event"):
                        out.events.append(json.loads(payload))
                    elif "/cmd_result/" in topic:
                        out.results.append((topic.rsplit("/", 1)[1], json.loads(payload)))
                    elif topic.endswith("/state"):
                        out.state = json.loads(payload)
                    elif topic.endswith("controller/status"):
                        out.status.append(payload.decode())
                    if stop.is_set():
                        return
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hypoxia",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _wait_line(proc: asyncio.subprocess.Process, text: str, timeout_s: float) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while line := await proc.stdout.readline():
            if text in line.decode(errors="replace"):
                return
    pytest.fail(f"'{text}' never printed")


@dataclass
class Plant:
    """Mosquitto, simulated instruments and the site file pointing at them."""

    broker: Mosquitto
    site: Path


@contextlib.asynccontextmanager
async def plant(tmp_path: Path) -> AsyncIterator[Plant]:
    broker = Mosquitto(tmp_path / "mosquitto", EXAMPLE / "passwd", EXAMPLE / "acl")
    broker.start()
    body = (
        f'host = "127.0.0.1"\nport = {broker.port}\nusername = "controller"\n'
        f'password = "{password("controller")}"'
    )
    site = site_file(tmp_path, broker=body)
    sim = await _spawn(
        "simulate-devices", str(site), "--vessel", "workstation-100l", "--speed", SPEED
    )
    try:
        await _wait_line(sim, "ready", 30)
        yield Plant(broker, site)
    finally:
        sim.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.communicate(), 10)
        broker.stop()


async def _command(
    port: int,
    user: str,
    payload: bytes | dict[str, Any],
    reactor: str = "ws1",
    as_topic_user: str | None = None,
) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    async with aiomqtt.Client(
        "127.0.0.1", port, username=user, password=password(user), identifier=f"cmd-{user}"
    ) as client:
        await client.publish(f"{BASE}/{reactor}/cmd/{as_topic_user or user}", body, qos=1)


async def _wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    """Poll state filled by the subscriber task (other processes drive it; no event to await)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling what other processes cause
            await asyncio.sleep(0.05)


def _assert_complete(seen: Collected) -> None:
    seqs = sorted({m["seq"] for m in seen.telemetry} | {m["seq"] for m in seen.events})
    assert seqs == list(range(1, seqs[-1] + 1)), "a sequence number is missing"
    kinds = [e["kind"] for e in seen.events]
    assert kinds.count("harvest_due") == 2
    assert kinds[-1] == "run_complete" or "run_complete" in kinds


async def test_commands_by_role_and_malformed_commands_over_mqtt(tmp_path: Path) -> None:
    async with plant(tmp_path) as p:
        seen, stop = Collected(), asyncio.Event()
        watcher = asyncio.create_task(_collect(p.broker.port, "vera", seen, stop))
        run = await _spawn(
            "run", str(p.site), str(ROOT / "examples/recipes/short-demo.toml"), "--speed", SPEED
        )
        await _wait_for(lambda: seen.state.get("run_id"))
        run_id = seen.state["run_id"]
        change = {
            "verb": "set_setpoint",
            "run_id": run_id,
            "variable": "o2_pct",
            "value": 5.2,
            "reason": "tighter protocol",
        }
        await _command(p.broker.port, "olga", {**change, "request_id": "olga-1"})
        await _command(p.broker.port, "erik", {**change, "request_id": "erik-1"})
        await _command(
            p.broker.port, "olga", {**change, "request_id": "spoof"}, as_topic_user="erik"
        )  # the ACL drops it: no result, no audit
        await _command(p.broker.port, "erik", b"{not json")
        await _command(p.broker.port, "erik", {**change, "value": "low", "request_id": "type"})
        await _command(
            p.broker.port, "erik", {"verb": "launch", "run_id": run_id, "request_id": "verb"}
        )
        await _command(p.broker.port, "erik", b'{"verb": "note", "text": "' + b"x" * 9000 + b'"}')
        # review finding: one malformed message used to end the controller's MQTT link
        async with aiomqtt.Client(
            "127.0.0.1",
            p.broker.port,
            username="recorder",
            password=password("recorder"),
            identifier="bad-replay",
        ) as c:
            await c.publish(
                f"{BASE}/replay/request",
                b'{"v": 1, "reactor": "ws1", "from_seq": 1e999, "to_seq": 2}',
                qos=1,
            )
        await _command(p.broker.port, "erik", b"[" * 5000)  # nests too deep for json
        await _command(
            p.broker.port,
            "erik",
            {"verb": "note", "run_id": run_id, "text": "still listening", "request_id": "alive"},
        )
        await _wait_for(lambda: len(seen.results) >= 8)
        by_id = {r.get("request_id"): (user, r) for user, r in seen.results}
        assert not by_id["olga-1"][1]["ok"]
        assert "role 'operator' may not set_setpoint" in by_id["olga-1"][1]["message"]
        assert by_id["erik-1"][1]["ok"]
        assert "spoof" not in by_id
        assert "valid number" in by_id["type"][1]["message"]
        assert "unknown verb" in by_id["verb"][1]["message"]
        assert by_id["alive"][1]["ok"]  # the link survived both malformed messages
        anonymous = [r for user, r in seen.results if r.get("request_id") is None]
        messages = " ".join(r["message"] for r in anonymous)
        assert "not JSON" in messages
        assert "at most 8192" in messages
        out, _ = await asyncio.wait_for(run.communicate(), 120)  # the service kept running
        assert run.returncode == 0, out.decode()
        await _wait_for(lambda: "offline" in seen.status)
        stop.set()
        watcher.cancel()
        _assert_complete(seen)
        assert any(
            e["kind"] == "setpoint_changed" and e["detail"]["new"] == 5.2 for e in seen.events
        )
        trail = AuditTrail.open(p.site.parent / "state" / "audit.sqlite")
        records = [(r.user, r.action, r.outcome.split(":")[0]) for r in trail.records()]
        assert ("olga", "set_setpoint", "refused") in records
        assert ("erik", "set_setpoint", "accepted") in records
        assert not any(r.user == "olga" and "spoof" in r.new_value for r in trail.records())
        assert trail.verify().ok


async def test_broker_outage_loses_nothing(tmp_path: Path) -> None:
    async with plant(tmp_path) as p:
        seen, stop = Collected(), asyncio.Event()
        watcher = asyncio.create_task(_collect(p.broker.port, "vera", seen, stop))
        run = await _spawn(
            "run", str(p.site), str(ROOT / "examples/recipes/short-demo.toml"), "--speed", SPEED
        )
        await _wait_for(lambda: len(seen.telemetry) > 60)
        p.broker.stop()  # 2 s of wall time = 60 s of the run at 30x
        await asyncio.sleep(2.0)
        p.broker.start()
        out, _ = await asyncio.wait_for(run.communicate(), 150)
        assert run.returncode == 0, out.decode()
        await _wait_for(lambda: "offline" in seen.status, 30)
        stop.set()
        watcher.cancel()
        _assert_complete(seen)
