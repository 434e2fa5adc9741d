"""Sites of many reactors: bounded names, and a 100-reactor site that starts and records with the
default recorder settings (the regression test of the start-up crash of issue 15: the recorder's
client id listed every reactor and its spool's file name passed 255 bytes)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from common.names import MAX_NAME_CHARS, bounded_name, safe_file_stem
from controller.service.site import load_site
from recorder.service import Recorder, default_client_id
from recorder.spool import spool_path
from tests.scale_kit import AIR_RECIPE, ScaleSite, hypoxia, interrupt, simulated_devices
from tests.service_kit import ROOT

# ---- units ---------------------------------------------------------------------------------------


def test_names_stay_bounded_stable_and_distinct() -> None:
    many = [f"r{i:03d}" for i in range(1, 501)]
    name = default_client_id("scale", many)
    assert len(name) <= MAX_NAME_CHARS
    assert name.startswith("hypoxia-recorder-scale-500r-")
    assert default_client_id("scale", list(reversed(many))) == name  # order does not matter
    assert default_client_id("scale", many[:-1]) != name  # another partition, another id
    assert default_client_id("scale", ["ws1", "ws2"]) == "hypoxia-recorder-scale-ws1_ws2"
    assert default_client_id("scale", ["*"]) == "hypoxia-recorder-scale"
    assert bounded_name("p", []) == "p"
    # whatever the client id, the spool's file name fits a file system's 255 bytes
    long_id = "x/" * 400
    stem = safe_file_stem(long_id)
    assert len(stem) <= 100
    assert safe_file_stem(long_id + "y") != stem
    path = spool_path(Path("/state"), long_id)
    assert len(path.name.encode()) <= 255
    assert "/" not in path.name


def test_the_recorder_of_a_500_reactor_site_opens_its_spool(tmp_path: Path) -> None:
    scale = ScaleSite.make(500, per_bus=40)
    site = load_site(scale.write(tmp_path / "site.toml", tmp_path / "state"))
    partition = Recorder(site, reactors=scale.ids[:499])  # every reactor but one, listed
    whole = Recorder(site)
    try:
        assert len(partition.client_id) <= MAX_NAME_CHARS
        assert partition.spool.path.exists()
        assert whole.client_id == "hypoxia-recorder-scale"
        assert whole.topics == [
            "hypoxia/v1/scale/+/telemetry",
            "hypoxia/v1/scale/+/event",
        ]
    finally:
        partition.spool.close()
        whole.spool.close()


# ---- a 100-reactor site, as separate processes ---------------------------------------------------

N_REACTORS = 100
CYCLES = 3


def _per_reactor(path: Path, query: str) -> dict[str, int]:
    """``reactor -> count`` from a database being written (empty while it is not there yet)."""
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        try:
            rows = db.execute(query).fetchall()
        except sqlite3.OperationalError:  # the table is not created yet, or busy
            return {}
    return {str(r): int(n) for r, n in rows}


def _stored(store: Path) -> dict[str, int]:
    """Telemetry points in the recorder's SQLite store, per reactor."""
    return _per_reactor(
        store,
        "SELECT json_extract(tags, '$.reactor'), count(*) FROM points "
        "WHERE measurement = 'telemetry' GROUP BY 1",
    )


def _cycled(journal: Path) -> dict[str, int]:
    """Cycles committed per reactor (telemetry messages in the journal's outbox)."""
    return _per_reactor(
        journal, "SELECT reactor, count(*) FROM outbox WHERE topic LIKE '%/telemetry' GROUP BY 1"
    )


def _our_tracebacks(text: str) -> list[str]:
    """Tracebacks in a log that pass through the project's own code (not only a library's).

    Under load the embedded amqtt broker logs its own 5 s PUBACK timeouts towards a slow
    subscriber as "Task exception was never retrieved" with a traceback inside amqtt: the session
    retransmits, nothing of ours failed. Those are not what this test looks for.
    """
    ours = []
    for chunk in text.split("Traceback (most recent call last):")[1:]:
        frames = [line for line in chunk.splitlines() if line.strip().startswith('File "')]
        if any(str(ROOT) in f and "/.venv/" not in f for f in frames):
            ours.append(chunk[:2000])
    return ours


def test_a_100_reactor_site_starts_and_records_with_the_default_recorder(tmp_path: Path) -> None:
    scale = ScaleSite.make(N_REACTORS, per_bus=4)
    site = scale.write(tmp_path / "site.toml", tmp_path / "state")  # embedded broker, no [recorder]
    recipe = tmp_path / "air.toml"
    recipe.write_text(AIR_RECIPE)
    store = tmp_path / "state" / "telemetry.sqlite"
    journal = tmp_path / "state" / "journal.sqlite"
    run_log = tmp_path / "run.log"
    with simulated_devices(site, tmp_path / "devices.log"):
        # --force: on a busy test machine an instrument may miss its first reads; a forced start
        # is audited and changes nothing for what is tested here
        run = hypoxia("run", str(site), str(recipe), "--force", log=run_log)
        try:
            # every reactor cycles, and the in-process recorder stores every reactor's telemetry
            # (how fast the outbox drains through the embedded broker is bench/pipeline.py's
            # subject, not this test's)
            deadline = time.monotonic() + 90
            cycled: dict[str, int] = {}
            stored: dict[str, int] = {}
            while time.monotonic() < deadline and run.poll() is None:
                cycled, stored = _cycled(journal), _stored(store)
                if len(stored) == N_REACTORS and min(cycled.values()) >= CYCLES:
                    break
                time.sleep(0.5)
        finally:
            status = interrupt(run, timeout_s=60)
    text = run_log.read_text(errors="replace")
    assert _our_tracebacks(text) == [], text[-4000:]
    assert "unable to open database file" not in text
    assert sorted(cycled) == scale.ids, text[-4000:]
    assert min(cycled.values()) >= CYCLES, cycled
    assert sorted(stored) == scale.ids, (len(stored), text[-4000:])
    assert status in (0, 130), text[-4000:]  # interrupted runs end cleanly (or as SIGINT)
    spools = [p.name for p in (tmp_path / "state" / "recorder").iterdir()]
    assert "hypoxia-recorder-scale.spool.sqlite" in spools, spools
