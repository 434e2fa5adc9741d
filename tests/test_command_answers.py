"""Commands over MQTT, against Mosquitto with the example ACL and real processes: a retained
command is never executed (not even after a reconnect), and every command gets exactly one
answer carrying its request id, whatever the id holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiomqtt
import pytest

from controller.service.audit import AuditTrail
from controller.service.mqtt_link import bounded_request_id
from tests.servers import Mosquitto
from tests.service_kit import ROOT
from tests.test_mqtt import (
    BASE,
    SPEED,
    Collected,
    _collect,
    _spawn,
    _wait_for,
    password,
    plant,
)

pytestmark = pytest.mark.skipif(not Mosquitto.available(), reason="mosquitto not installed")


def test_request_ids_are_bounded_and_always_representable() -> None:
    assert bounded_request_id("abc") == "abc"
    assert bounded_request_id(7) == 7
    assert bounded_request_id(None) is None
    assert bounded_request_id("x" * 500) == "x" * 128
    nested: list[object] = []
    for _ in range(5000):
        nested = [nested]
    text = bounded_request_id({"deep": nested})
    assert isinstance(text, str)
    assert len(text) <= 128


async def test_retained_commands_are_refused_and_every_command_is_answered(
    tmp_path: Path,
) -> None:
    async with plant(tmp_path) as p:
        # a hold left retained on the broker before the controller starts
        async with aiomqtt.Client(
            "127.0.0.1", p.broker.port, username="erik", password=password("erik"), identifier="r"
        ) as erik:
            await erik.publish(
                f"{BASE}/ws1/cmd/erik",
                json.dumps({"verb": "hold", "run_id": "whatever", "request_id": "retained-1"}),
                qos=1,
                retain=True,
            )
        seen, stop = Collected(), asyncio.Event()
        watcher = asyncio.create_task(_collect(p.broker.port, "vera", seen, stop))
        run = await _spawn(
            "run", str(p.site), str(ROOT / "examples/recipes/short-demo.toml"), "--speed", SPEED
        )
        await _wait_for(lambda: seen.state.get("run_id"))
        run_id = str(seen.state["run_id"])
        await _wait_for(lambda: any(r.get("request_id") == "retained-1" for _, r in seen.results))

        def note_with_id(depth: int) -> bytes:
            deep = "[" * depth + "]" * depth
            return (
                '{"verb": "note", "run_id": "' + run_id + f'", "text": "id depth {depth}", '
                '"request_id": {"a": ' + deep + "}}"
            ).encode()

        async with aiomqtt.Client(
            "127.0.0.1", p.broker.port, username="erik", password=password("erik"), identifier="c"
        ) as erik:
            await erik.publish(f"{BASE}/ws1/cmd/erik", note_with_id(900), qos=1)
            await erik.publish(f"{BASE}/ws1/cmd/erik", note_with_id(3000), qos=1)
            big = json.dumps(
                {"verb": "note", "run_id": run_id, "request_id": "big-1", "text": "y" * 9000}
            )
            await erik.publish(f"{BASE}/ws1/cmd/erik", big, qos=1)
        await _wait_for(lambda: len(seen.results) >= 4)
        # the retained hold was cleared from the broker: a new subscriber gets nothing retained
        async with aiomqtt.Client(
            "127.0.0.1", p.broker.port, username="erik", password=password("erik"), identifier="n"
        ) as probe:
            await probe.subscribe(f"{BASE}/ws1/cmd/erik", qos=1)
            got: list[aiomqtt.Message] = []

            async def first_message() -> None:
                async for message in probe.messages:
                    got.append(message)
                    return

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_message(), 1.0)
            assert got == []
        out, _ = await asyncio.wait_for(run.communicate(), 150)
        assert run.returncode == 0, out.decode()
        stop.set()
        watcher.cancel()
    answers = [r for _, r in seen.results]
    retained = [r for r in answers if r.get("request_id") == "retained-1"]
    assert len(retained) == 1
    assert not retained[0]["ok"]
    assert "retained command message is never executed" in retained[0]["message"]
    assert not any(e["kind"] == "phase_held" for e in seen.events)  # the hold never acted
    by_text = [r for r in answers if str(r.get("request_id")).startswith('{"a"')]
    assert len(by_text) == 2  # each nested id came back as bounded text, exactly once
    assert all(len(r["request_id"]) <= 128 for r in by_text)
    executed, unparsable = sorted(by_text, key=lambda r: not r["ok"])
    assert executed["ok"]  # valid command, deep id: executed and answered
    assert not unparsable["ok"]
    assert "not JSON" in unparsable["message"]
    big_answers = [r for r in answers if r.get("request_id") == "big-1"]
    assert len(big_answers) == 1
    assert "at most 8192" in big_answers[0]["message"]
    trail = AuditTrail.open(p.site.parent / "state" / "audit.sqlite")
    assert any(
        r.action == "hold" and r.outcome.startswith("refused: a retained command")
        for r in trail.records()
    )
