"""The real commands as separate processes: ``hypoxia simulate-devices`` serving the example site,
``hypoxia run`` controlling it over the wire, and a SIGKILL in the middle of a hold."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.service.audit import AuditTrail
from controller.service.journal import RunJournal
from tests.service_kit import ROOT, site_file

SPEED = "30"
RECIPE = str(ROOT / "examples/recipes/short-demo.toml")


def _hypoxia(*args: str) -> subprocess.Popen[bytes]:
    # unbuffered bytes: select() then sees exactly what the child has written
    return subprocess.Popen(
        [sys.executable, "-m", "hypoxia", *args],
        cwd=ROOT,
        bufsize=0,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_for_line(proc: subprocess.Popen[bytes], text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline().decode(errors="replace")
            seen.append(line)
            if text in line:
                return
        if proc.poll() is not None:
            break
    pytest.fail(f"'{text}' not seen; output: {''.join(seen)}")


@pytest.fixture
def simulated_site(tmp_path: Path) -> Iterator[Path]:
    """`hypoxia simulate-devices` serving a private copy of examples/sites/sim.toml."""
    site = site_file(tmp_path)
    proc = _hypoxia("simulate-devices", str(site), "--vessel", "workstation-100l", "--speed", SPEED)
    try:
        _wait_for_line(proc, "ready", 30)
        yield site
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _journal(site: Path) -> RunJournal:
    return RunJournal.open(site.parent / "state" / "journal.sqlite")


def _exposure_now(site: Path) -> float:
    """Exposure in the journal's last checkpoint (0 before the service has written one)."""
    path = site.parent / "state" / "journal.sqlite"
    if not path.exists():
        return 0.0
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT engine FROM checkpoints").fetchone()
    except sqlite3.OperationalError:
        return 0.0
    finally:
        conn.close()
    if row is None:
        return 0.0
    clock: dict[str, Any] | None = json.loads(row[0])["clock"]
    return float(clock["exposure_s"]) if clock else 0.0


def test_run_end_to_end_against_simulate_devices(simulated_site: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "hypoxia", "run", str(simulated_site), RECIPE, "--speed", SPEED],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ws1: complete" in run.stdout
    journal = _journal(simulated_site)
    ((run_id, status),) = journal.conn.execute("SELECT run_id, status FROM runs").fetchall()
    assert status == "complete"
    events = journal.events(run_id)
    kinds = [e["kind"] for e in events]
    assert kinds.count("harvest_due") == 2
    due = journal.events(run_id, "harvest_due")
    assert [(h["name"], h["exposure_s"]) for h in due] == [("CM-2min", 120.0), ("CM-5min", 300.0)]
    assert all(h["excursions"] == 0 for h in due)
    # the 5 % purge took as long as physics says (to 5.3 %: ~7.5 min), not longer than 1.3x
    first_in_band = due[0]["opened_s"]
    assert 300 < first_in_band < 1.3 * 7.5 * 60 + 60
    phase_end = journal.events(run_id, "phase_end")
    assert phase_end[0]["exposure_s"] == pytest.approx(301.0, abs=1.0)
    assert phase_end[1]["t_s"] - phase_end[0]["t_s"] == pytest.approx(72.0, abs=2.0)
    stored = journal.run(run_id)
    assert stored is not None
    assert stored.recipe_toml == Path(RECIPE).read_text()
    # the zero-setup default: embedded broker and in-process recorder wrote every message to SQLite
    outbox = journal.replay("ws1", 1, 10**9)
    telemetry = sum(1 for m in outbox if m.topic.endswith("/telemetry"))
    event_count = sum(1 for m in outbox if m.topic.endswith("/event"))
    store = sqlite3.connect(simulated_site.parent / "state" / "telemetry.sqlite")
    counts = dict(store.execute("SELECT measurement, COUNT(*) FROM points GROUP BY measurement"))
    store.close()
    assert counts["telemetry"] == telemetry
    assert counts["event"] == event_count
    assert counts["harvest"] == 3  # both due; only the pumped one is done (no operator here)
    verify = subprocess.run(
        [sys.executable, "-m", "hypoxia", "audit", "verify", str(simulated_site)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout


def test_sigkill_mid_hold_resumes_same_phase_and_exposure(simulated_site: Path) -> None:
    first = _hypoxia("run", str(simulated_site), RECIPE, "--speed", SPEED)
    deadline = time.monotonic() + 120
    while _exposure_now(simulated_site) < 180.0:  # past the first harvest, before the second
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the run never reached 180 s of exposure"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    killed_at = _exposure_now(simulated_site)
    time.sleep(2.0)  # the controller stays dead ~60 s of simulated time
    resumed = subprocess.run(
        [sys.executable, "-m", "hypoxia", "run", str(simulated_site), "--speed", SPEED],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    journal = _journal(simulated_site)
    runs = journal.conn.execute("SELECT run_id, status FROM runs").fetchall()
    assert len(runs) == 1  # the same run, resumed, not a new one
    run_id, status = runs[0]
    assert status == "complete"
    resume = journal.events(run_id, "run_resumed")[0]
    assert resume["phase"] == "hypoxic hold"
    assert resume["exposure_s"] == killed_at  # the exposure clock picked up exactly
    assert resume["outage_s"] >= 30.0
    outages = journal.outages(run_id)
    assert len(outages) == 1
    assert (outages[0][1] - outages[0][0]).total_seconds() == pytest.approx(
        resume["outage_s"], abs=1.0
    )
    due = journal.events(run_id, "harvest_due")
    assert [(h["name"], h["exposure_s"]) for h in due] == [("CM-2min", 120.0), ("CM-5min", 300.0)]
    gap = [e for e in journal.events(run_id, "alarm") if e["alarm"] == "data_gap"]
    assert gap[0]["to"] == "active_unacknowledged"
    trail = AuditTrail.open(simulated_site.parent / "state" / "audit.sqlite")
    actions = [r.action for r in trail.records()]
    assert actions == ["run_start", "run_resume"]
    assert trail.verify().ok
