"""The zero-setup embedded broker is as closed as Mosquitto with the example ACL.

Real processes (`hypoxia simulate-devices`, `hypoxia run` with its embedded broker and in-process
recorder) and real MQTT clients: anonymous and wrong-password logins are refused, an operator
cannot publish on an engineer's command topic, an operator's set point is refused by role and
audited, an engineer's is accepted, and the recorder still stores every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import stat
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from common.config_errors import ConfigError
from common.passwords import set_password
from controller.service.audit import AuditTrail
from controller.service.journal import RunJournal
from controller.service.site import load_site
from tests.service_kit import ROOT, free_port, site_file
from tests.test_mqtt import _spawn, _wait_for, _wait_line

SPEED = "30"
BASE = "hypoxia/v1/sim"
PASSWORDS = {"olga": "olga-secret-1", "erik": "erik-secret-1", "vera": "vera-secret-1"}


def _client(
    port: int, user: str | None, password: str | None, ident: str, *, persistent: bool = False
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        username=user,
        password=password,
        identifier=ident,
        # a loaded CI machine can hold amqtt's PUBACK past aiomqtt's 5 s default (seen once)
        timeout=20,
        clean_session=not persistent,  # a watcher that reconnects must not miss results
    )


async def _connect_refused(port: int, user: str | None, password: str | None) -> str:
    """Try to connect; return the refusal, fail if the broker lets the client in."""
    try:
        async with _client(port, user, password, f"probe-{user}"):
            pass
    except aiomqtt.MqttError as exc:
        return str(exc)
    pytest.fail(f"the broker accepted {user!r}")


async def test_embedded_broker_authenticates_and_applies_topic_rules(tmp_path: Path) -> None:
    port = free_port()
    site = site_file(tmp_path, broker=f"embedded = true\nport = {port}")
    config = load_site(site)
    for user, password in PASSWORDS.items():
        set_password(config.users_file, user, password)
    assert stat.S_IMODE(os.stat(config.users_file).st_mode) == 0o600
    sim = await _spawn(
        "simulate-devices", str(site), "--vessel", "workstation-100l", "--speed", SPEED
    )
    run: asyncio.subprocess.Process | None = None
    try:
        await _wait_line(sim, "ready", 30)
        run = await _spawn(
            "run", str(site), str(ROOT / "examples/recipes/short-demo.toml"), "--speed", SPEED
        )
        states: list[dict[str, Any]] = []
        results: list[tuple[str, dict[str, Any]]] = []

        async def watch() -> None:  # erik sees everything of the site, including results
            while True:
                try:
                    async with _client(
                        port, "erik", PASSWORDS["erik"], "watch-erik", persistent=True
                    ) as c:
                        await c.subscribe(f"{BASE}/#", qos=1)
                        async for msg in c.messages:
                            payload = msg.payload if isinstance(msg.payload, bytes) else b""
                            topic = str(msg.topic)
                            if topic.endswith("/state"):
                                states.append(json.loads(payload))
                            elif "/cmd_result/" in topic:
                                results.append((topic.rsplit("/", 1)[1], json.loads(payload)))
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        await _wait_for(lambda: states and states[-1].get("run_id"), 60.0)
        run_id = states[-1]["run_id"]

        # anonymous and wrong passwords are refused at connect
        assert "authori" in (await _connect_refused(port, None, None)).lower()
        assert "authori" in (await _connect_refused(port, "erik", "wrong")).lower()
        assert "authori" in (await _connect_refused(port, "controller", "guess")).lower()

        change = {
            "verb": "set_setpoint",
            "run_id": run_id,
            "variable": "o2_pct",
            "value": 5.2,
            "reason": "tighter protocol",
        }
        async with _client(port, "olga", PASSWORDS["olga"], "cmd-olga") as olga:
            await olga.publish(
                f"{BASE}/ws1/cmd/olga", json.dumps({**change, "request_id": "olga-1"}), qos=1
            )
            # the topic rules drop a publish on somebody else's command topic
            await olga.publish(
                f"{BASE}/ws1/cmd/erik", json.dumps({**change, "request_id": "spoof"}), qos=1
            )
        async with _client(port, "erik", PASSWORDS["erik"], "cmd-erik") as erik:
            await erik.publish(
                f"{BASE}/ws1/cmd/erik", json.dumps({**change, "request_id": "erik-1"}), qos=1
            )
        async with _client(port, "vera", PASSWORDS["vera"], "cmd-vera") as vera:
            await vera.publish(  # a viewer may publish no command at all
                f"{BASE}/ws1/cmd/vera",
                json.dumps({"verb": "note", "run_id": run_id, "text": "hi", "request_id": "v"}),
                qos=1,
            )
        await _wait_for(
            lambda: {"olga-1", "erik-1"} <= {r.get("request_id") for _, r in results}, 60.0
        )
        by_id = {r.get("request_id"): (user, r) for user, r in results}
        assert by_id["olga-1"][0] == "olga"
        assert not by_id["olga-1"][1]["ok"]
        assert "role 'operator' may not set_setpoint" in by_id["olga-1"][1]["message"]
        assert by_id["erik-1"][1]["ok"]

        out, _ = await asyncio.wait_for(run.communicate(), 300)  # 1 h simulated at most
        assert run.returncode == 0, out.decode()
        watcher.cancel()
        assert "spoof" not in by_id
        assert "v" not in by_id
    finally:
        if run is not None and run.returncode is None:
            run.kill()
            await run.wait()
        sim.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sim.communicate(), 10)

    state = tmp_path / "state"
    trail = AuditTrail.open(state / "audit.sqlite")
    records = [(r.user, r.action, r.outcome.split(":")[0]) for r in trail.records()]
    assert ("olga", "set_setpoint", "refused") in records
    assert ("erik", "set_setpoint", "accepted") in records
    assert not any("spoof" in json.dumps(r.new_value) for r in trail.records())
    assert not any(r.user == "vera" for r in trail.records())
    # the service accounts' passwords were generated into the state directory, private
    creds = state / "service-credentials.json"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    assert set(json.loads(creds.read_text())) == {"controller", "recorder"}
    # the in-process recorder logged in as "recorder" and stored every message
    journal = RunJournal.open(state / "journal.sqlite")
    outbox = journal.replay("ws1", 1, 10**9)
    store = sqlite3.connect(state / "telemetry.sqlite")
    counts = dict(store.execute("SELECT measurement, COUNT(*) FROM points GROUP BY measurement"))
    store.close()
    assert counts["telemetry"] == sum(1 for m in outbox if m.topic.endswith("/telemetry"))
    assert counts["event"] == sum(1 for m in outbox if m.topic.endswith("/event"))


def test_anonymous_embedded_broker_only_on_loopback(tmp_path: Path) -> None:
    site = site_file(
        tmp_path, broker='embedded = true\nallow_anonymous = true\nhost = "0.0.0.0"\nport = 1883'
    )
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    message = str(caught.value)
    assert "broker.host" in message
    assert "anonymous" in message
    assert "allowed: a loopback address" in message
    loopback = site_file(
        tmp_path / "ok", broker="embedded = true\nallow_anonymous = true\nport = 1883"
    )
    assert load_site(loopback).broker.allow_anonymous
