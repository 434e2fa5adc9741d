"""End to end, with every outage at once: a simulated run publishes through Mosquitto (example ACL);
two recorders write InfluxDB 1.6.7 and VictoriaMetrics; Mosquitto is stopped for 60 s, both stores
for 60 s, the InfluxDB recorder and the controller are SIGKILLed. Afterwards each store holds every
telemetry point and event the controller produced, exactly once, values included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controller.service.journal import RunJournal
from tests.servers import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.service_kit import ROOT, site_file

pytestmark = pytest.mark.skipif(
    not (Mosquitto.available() and InfluxDB1.available() and VictoriaMetrics.available()),
    reason="mosquitto, influxdb and victoria-metrics are installed by scripts/test",
)

SPEED = "4"
OUTAGE_S = 60.0
EXAMPLE = ROOT / "examples/mosquitto"


def _broker(port: int, user: str) -> str:
    return (
        f'host = "127.0.0.1"\nport = {port}\nusername = "{user}"\n'
        f'password = "{user}-example-password"'
    )


def _with_recorder(site: Path, name: str, store: str, client_id: str, user: str, port: int) -> Path:
    """A copy of the site file for one recorder: its own broker user, store and session."""
    text = site.read_text()
    text = text.replace(_broker(port, "controller"), _broker(port, user))
    text += (
        f'\n[recorder]\nclient_id = "{client_id}"\nbatch_interval_s = 0.5\n'
        f"[recorder.store]\n{store}\n"
    )
    path = site.parent / f"{name}.toml"
    path.write_text(text)
    return path


def _spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hypoxia", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def _influx(url: str, query: str) -> list[list[Any]]:
    params = urllib.parse.urlencode({"db": "hypoxia", "q": query, "epoch": "u"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=10) as resp:  # noqa: S310
        result = json.load(resp)["results"][0]
    series = result.get("series") or []
    return [row for s in series for row in s["values"]]


def _vm_series(url: str, metric: str) -> list[tuple[int, float]]:
    # the run's clock runs SPEED times faster than the wall: its samples lie in the future, and
    # the export API stops at "now" unless told otherwise
    params = urllib.parse.urlencode({"match[]": metric, "end": str(int(time.time()) + 86400)})
    with urllib.request.urlopen(f"{url}/api/v1/export?{params}", timeout=10) as resp:  # noqa: S310
        lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    return [
        (t, v) for line in lines for t, v in zip(line["timestamps"], line["values"], strict=True)
    ]


def _wait(predicate: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_every_point_in_both_stores_after_every_outage(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    mosquitto = Mosquitto(tmp_path / "mosquitto", EXAMPLE / "passwd", EXAMPLE / "acl")
    influx = InfluxDB1(tmp_path / "influxdb")
    vm = VictoriaMetrics(tmp_path / "vm")
    for server in (mosquitto, influx, vm):
        server.start()
    site = site_file(tmp_path, broker=_broker(mosquitto.port, "controller"))
    rec_influx = _with_recorder(
        site,
        "rec-influx",
        f'kind = "influxdb1"\nurl = "{influx.url}"',
        "rec-influx",
        "recorder",
        mosquitto.port,
    )
    rec_vm = _with_recorder(
        site,
        "rec-vm",
        f'kind = "influxdb2"\nurl = "{vm.url}"',
        "rec-vm",
        "recorder",
        mosquitto.port,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = _spawn(
            logs / "sim.log",
            "simulate-devices",
            str(site),
            "--vessel",
            "workstation-100l",
            "--speed",
            SPEED,
        )
        procs.append(sim)
        _wait(lambda: b"ready" in (logs / "sim.log").read_bytes(), "simulate-devices", 30)
        recorders = {
            name: _spawn(logs / f"{name}.log", "record", str(path))
            for name, path in (("influx", rec_influx), ("vm", rec_vm))
        }
        procs += recorders.values()
        recipe = str(ROOT / "examples/recipes/short-demo.toml")
        run = _spawn(logs / "run.log", "run", str(site), recipe, "--speed", SPEED)
        procs.append(run)
        time.sleep(10)

        mosquitto.stop()  # 1. broker away for 60 s
        time.sleep(OUTAGE_S)
        mosquitto.start()
        time.sleep(5)
        influx.stop()  # 2. both stores away for 60 s
        vm.stop()
        time.sleep(OUTAGE_S)
        influx.start()
        vm.start()
        time.sleep(3)
        recorders["influx"].send_signal(signal.SIGKILL)  # 3. a recorder killed
        recorders["influx"].wait()
        recorders["influx"] = _spawn(logs / "influx.log", "record", str(rec_influx))
        procs.append(recorders["influx"])
        time.sleep(3)
        run.send_signal(signal.SIGKILL)  # 4. the controller killed mid-run
        run.wait()
        time.sleep(2)
        run = _spawn(logs / "run.log", "run", str(site), "--speed", SPEED)  # resumes
        procs.append(run)
        assert run.wait(timeout=400) == 0, (logs / "run.log").read_text()[-3000:]

        journal = RunJournal.open(site.parent / "state" / "journal.sqlite")
        outbox = [
            json.loads(m.payload) | {"_topic": m.topic} for m in journal.replay("ws1", 1, 10**9)
        ]
        journal.close()
        assert not any(m.get("replay") for m in outbox)
        telemetry = {m["seq"]: m for m in outbox if m["_topic"].endswith("/telemetry")}
        events = {m["seq"]: m for m in outbox if m["_topic"].endswith("/event")}
        kinds = [e["kind"] for e in events.values()]
        assert "run_resumed" in kinds
        assert kinds.count("harvest_due") == 2

        def influx_complete() -> bool:
            rows = _influx(influx.url, "SELECT seq FROM telemetry WHERE reactor = 'ws1'")
            return len(rows) >= len(telemetry)

        _wait(influx_complete, "InfluxDB to hold every telemetry point", 120)
        rows = _influx(influx.url, "SELECT seq, o2_pct, n2_lpm FROM telemetry")
        assert sorted(r[1] for r in rows) == sorted(telemetry)  # every one, exactly once
        for _, seq, o2, n2 in rows:
            assert o2 == telemetry[seq]["o2_pct"]
            assert n2 == telemetry[seq]["n2_lpm"]
        event_rows = _influx(influx.url, "SELECT seq, kind FROM event")
        assert sorted(r[1] for r in event_rows) == sorted(events)
        assert all(kind == events[seq]["kind"] for _, seq, kind in event_rows)

        def vm_complete() -> bool:
            vm.flush()
            return len(_vm_series(vm.url, "telemetry_seq")) >= len(telemetry)

        _wait(vm_complete, "VictoriaMetrics to hold every telemetry point", 120)
        vm_seq = _vm_series(vm.url, "telemetry_seq")
        assert sorted(int(v) for _, v in vm_seq) == sorted(telemetry)  # exactly once each
        vm_o2 = dict(_vm_series(vm.url, "telemetry_o2_pct"))
        for message in telemetry.values():
            if message["o2_pct"] is None:  # untrusted reading: no field was written
                continue
            ts_ms = message["ts_ms"]  # VictoriaMetrics keeps milliseconds (of ts_us)
            stored = vm_o2.get(ts_ms, vm_o2.get(ts_ms + 1))
            assert stored == pytest.approx(message["o2_pct"])
        vm_events = _vm_series(vm.url, "event_seq")
        assert sorted(int(v) for _, v in vm_events) == sorted(events)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        for server in (mosquitto, influx, vm):
            server.stop()
