"""Past one process: two controller processes, each running its partition of a site's reactors
(two site files, same site id and broker root, ``partition = "a"`` / ``"b"``), and two recorders in
one MQTT shared-subscription group, against one real Mosquitto and one InfluxDB 1.6.7 — every
message of every reactor stored, none received by both recorders (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from common.config_errors import ConfigError
from controller.service.journal import RunJournal
from controller.service.site import load_site
from recorder.service import Recorder
from recorder.spool import read_audit_heads
from telemetry.topics import Topics
from tests.scale_kit import ScaleSite, hypoxia, interrupt, simulated_devices, wait_for_text
from tests.servers import InfluxDB1, Mosquitto
from tests.service_kit import ROOT, air_hold
from tests.test_recorder_kit import influx_rows

RECIPE = air_hold("short air hold (partition test)", 0.02, co2_pct=0.5)
SPEED = "5"
GROUP = "recorders"


def _recorder_section(influx_url: str) -> str:
    return (
        f'[recorder]\nshare_group = "{GROUP}"\ngap_detection = false\nbatch_interval_s = 0.2\n\n'
        f'[recorder.store]\nkind = "influxdb1"\nurl = "{influx_url}"\ndatabase = "scale"\n'
    )


def _received(log: Path) -> int:
    """Messages a recorder received, from its last status line."""
    counts = re.findall(r"recorder \S+: received (\d+),", log.read_text(errors="replace"))
    assert counts, log.read_text(errors="replace")[-3000:]
    return int(counts[-1])


def _stored(url: str, reactor: str) -> list[int]:
    """``seq`` of every telemetry and event point of a reactor in InfluxDB, sorted."""
    seqs: list[int] = []
    for measurement in ("telemetry", "event"):
        rows = influx_rows(
            url, "scale", f"SELECT seq FROM {measurement} WHERE reactor = '{reactor}'"
        )
        seqs += [int(r["seq"]) for r in rows]
    return sorted(seqs)


async def _retained(port: int, topic: str) -> dict[str, str]:
    """The retained messages under a topic filter, as a late subscriber gets them."""
    seen: dict[str, str] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-status-watch") as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(2.0):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    seen[str(message.topic)] = message.payload.decode()
        except TimeoutError:
            pass
    return seen


async def _command_once(port: int, reactor: str) -> list[dict[str, Any]]:
    """A note for ``reactor``'s running run, published as erik; every answer within 3 s."""
    topics = Topics("hypoxia/v1", "scale")
    answers: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-commander") as client:
        await client.subscribe(topics.state(reactor), qos=1)
        await client.subscribe(topics.command_result(reactor, "erik"), qos=1)
        run_id = None
        async with asyncio.timeout(30.0):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.topic.matches(topics.state(reactor)) and message.payload:
                    run_id = json.loads(message.payload).get("run_id")
                    if run_id:
                        break
        note = {"verb": "note", "run_id": run_id, "text": "one answer", "request_id": "n1"}
        await client.publish(topics.command(reactor, "erik"), json.dumps(note), qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    if message.topic.matches(topics.command_result(reactor, "erik")):
                        answers.append(json.loads(message.payload))
    return answers


def _published(tmp_path: Path, halves: dict[str, list[str]]) -> dict[str, int]:
    """Per reactor, the last number its partition's journal published (all acknowledged)."""
    published: dict[str, int] = {}
    for name, ids in halves.items():
        journal = RunJournal.open(tmp_path / f"state-{name}" / "journal.sqlite")
        try:
            for rid in ids:
                published[rid] = journal.next_seq(rid) - 1
            assert not journal.unpublished(1)
        finally:
            journal.close()
    return published


def _audit_verifies(site: Path, spools: list[Path]) -> None:
    """``hypoxia audit verify`` of a partition's trail against the recorders' heads: ok."""
    given = [f"--recorder-spool={spool}" for spool in spools]
    verify = subprocess.run(
        [sys.executable, "-m", "hypoxia", "audit", "verify", str(site), *given],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "matches the recorder's copy" in verify.stdout


def test_a_share_group_member_needs_its_own_client_id_and_no_gap_detection(
    tmp_path: Path,
) -> None:
    scale = ScaleSite.make(2, per_bus=2)
    shared = '[recorder]\nshare_group = "g"\ngap_detection = false\n'
    site = load_site(scale.write(tmp_path / "site.toml", tmp_path / "state", extra=""))
    path = tmp_path / "shared.toml"
    path.write_text((tmp_path / "site.toml").read_text() + "\n" + shared)
    with pytest.raises(ConfigError, match="needs a client id of its own"):
        Recorder(load_site(path))
    member = Recorder(load_site(path), client_id="rec-1")
    try:
        assert member.topics == [
            "$share/g/hypoxia/v1/scale/+/telemetry",
            "$share/g/hypoxia/v1/scale/+/event",
        ]
        assert member.state_topics == ["hypoxia/v1/scale/+/state"]  # every member, unshared
    finally:
        member.spool.close()
    path.write_text((tmp_path / "site.toml").read_text() + '\n[recorder]\nshare_group = "g"\n')
    with pytest.raises(ConfigError, match=r"recorder\.share_group: .*gap_detection = false"):
        load_site(path)
    path.write_text((tmp_path / "site.toml").read_text() + '\n[recorder]\nshare_group = "a/b"\n')
    with pytest.raises(ConfigError, match=r"recorder\.share_group"):
        load_site(path)
    assert site.partition is None


@pytest.mark.skipif(
    not (Mosquitto.available() and InfluxDB1.available()), reason="needs mosquitto and influxd"
)
def test_two_controllers_and_two_shared_recorders_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    scale = ScaleSite.make(8, per_bus=2)
    halves = {"a": scale.ids[:4], "b": scale.ids[4:]}
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    broker, influx = Mosquitto(tmp_path / "mosquitto"), InfluxDB1(tmp_path / "influx")
    with broker, influx:
        body = f'host = "127.0.0.1"\nport = {broker.port}'
        recording = _recorder_section(influx.url)
        whole = scale.write(tmp_path / "site.toml", tmp_path / "state", broker=body)
        whole.write_text(whole.read_text() + "\n" + recording)
        sites = {
            name: scale.write(
                tmp_path / f"site-{name}.toml",
                tmp_path / f"state-{name}",
                ids=ids,
                broker=body,
                extra=f'partition = "{name}"',
            )
            for name, ids in halves.items()
        }
        recorders = {}
        logs = {m: tmp_path / f"recorder-{m}.log" for m in ("1", "2")}
        for member, log in logs.items():
            recorders[member] = hypoxia(
                "record", str(whole), "--client-id", f"recorder-{member}", log=log
            )
        try:
            for member, proc in recorders.items():
                wait_for_text(proc, logs[member], "subscribed", 30)
            with simulated_devices(whole, tmp_path / "devices.log"):
                runs = {
                    name: hypoxia(
                        "run",
                        str(site),
                        str(recipe),
                        "--speed",
                        SPEED,
                        log=tmp_path / f"{name}.log",
                    )
                    for name, site in sites.items()
                }
                # a command for a reactor of partition b: answered once, by b alone
                answers = asyncio.run(_command_once(broker.port, halves["b"][0]))
                for name, proc in runs.items():
                    status = proc.wait(timeout=120)
                    text = (tmp_path / f"{name}.log").read_text(errors="replace")
                    assert status == 0, text[-4000:]
                    assert "Traceback" not in text
            # every reactor's every number, from its own partition's journal
            published = _published(tmp_path, halves)
            assert min(published.values()) > 10
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if all(
                    _stored(influx.url, r) == list(range(1, n + 1)) for r, n in published.items()
                ):
                    break
                time.sleep(0.5)
            for rid, n in published.items():
                assert _stored(influx.url, rid) == list(range(1, n + 1)), rid
            statuses = asyncio.run(_retained(broker.port, "hypoxia/v1/scale/controller/+/status"))
        finally:
            for proc in recorders.values():
                interrupt(proc)
        # the group split the stream and no message went to both members
        received = {member: _received(log) for member, log in logs.items()}
        assert sum(received.values()) == sum(published.values()), (received, published)
        assert all(n > 0 for n in received.values()), received
        assert [(a["request_id"], a["ok"]) for a in answers] == [("n1", True)], answers
        # each partition's audit trail is checked against the heads the recorders kept of it,
        # and no recorder took one partition's head for another's going back
        for log in logs.values():
            assert "went from record" not in log.read_text(errors="replace")
        spools = sorted((tmp_path / "state" / "recorder").glob("*.spool.sqlite"))
        assert len(spools) == 2
        for site in sites.values():
            _audit_verifies(site, spools)
        # each controller process kept its own status topic (and MQTT session)
        assert statuses == {
            "hypoxia/v1/scale/controller/a/status": "offline",
            "hypoxia/v1/scale/controller/b/status": "offline",
        }


async def test_heads_of_two_partitions_trails_are_kept_apart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scale = ScaleSite.make(2, per_bus=2)
    recorder = Recorder(load_site(scale.write(tmp_path / "site.toml", tmp_path / "state")))

    def feed(reactor: str, trail: str, seq: int, digest: str) -> None:
        head = {"seq": seq, "hash": digest, "trail": trail}
        state = {"v": 1, "ts_ms": 5, "site": "scale", "reactor": reactor, "audit_head": head}
        topic = f"hypoxia/v1/scale/{reactor}/state"
        message = aiomqtt.Message(
            topic, json.dumps(state).encode(), qos=1, retain=True, mid=1, properties=None
        )
        recorder._record([message])

    try:
        with caplog.at_level(logging.ERROR, logger="recorder"):
            feed("r001", "a", 50, "aa" * 32)
            feed("r002", "b", 20, "bb" * 32)  # another trail: not a head going back
            feed("r001", "a", 51, "ab" * 32)
            assert caplog.text == ""
            feed("r001", "a", 49, "ac" * 32)  # trail a going back: an error
        assert "went from record 51" in caplog.text
        assert recorder.spool.audit_head("a") == (51, "ab" * 32)
        assert recorder.spool.audit_head("b") == (20, "bb" * 32)
        assert recorder.spool.audit_head() is None  # no head of an unpartitioned trail
        spool = recorder.spool.path
    finally:
        recorder.spool.close()
    assert [h.seq for h in read_audit_heads(spool, "a")] == [51, 50, 49]
    assert [h.seq for h in read_audit_heads(spool, "b")] == [20]
