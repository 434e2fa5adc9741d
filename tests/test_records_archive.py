"""Exports and archives of a service run: CSV and Parquet load back with every stored point; an
archive verifies when fresh and fails, naming the member, when any member is changed or removed,
or when its audit records disagree with the live trail."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import sqlite3
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from records.archive import verify_archive
from records.state import ReadOnlyAudit
from tests.cli import hypoxia
from tests.records_kit import DoorRun, door_run, load_sqlite

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs chromium (scripts/test installs it)"
)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> DoorRun:
    """The door run, recorded into the site's SQLite store."""
    run = asyncio.run(door_run(tmp_path_factory.mktemp("door")))
    asyncio.run(load_sqlite(run))
    return run


def _store_counts(door: DoorRun) -> tuple[int, Counter[str], int]:
    """Telemetry points, points per telemetry field, event points of the run in the store."""
    db = sqlite3.connect(door.site.parent / "state" / "telemetry.sqlite")
    try:
        rows = db.execute(
            "SELECT measurement, fields FROM points WHERE json_extract(tags, '$.run_id') = ?",
            (door.run_id,),
        ).fetchall()
    finally:
        db.close()
    fields: Counter[str] = Counter()
    telemetry = events = 0
    for measurement, text in rows:
        if measurement == "telemetry":
            telemetry += 1
            fields.update(json.loads(text).keys())
        elif measurement == "event":
            events += 1
    return telemetry, fields, events


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_every_stored_point(door: DoorRun, tmp_path: Path, fmt: str) -> None:
    result = hypoxia(
        "export", door.run_id, "--site", str(door.site), "--format", fmt, "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    telemetry, fields, events = _store_counts(door)
    if fmt == "csv":
        with (tmp_path / "telemetry.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        with (tmp_path / "events.csv").open() as fh:
            event_rows = list(csv.DictReader(fh))
        held = Counter(k for row in rows for k, v in row.items() if v != "")
        columns = set(rows[0])
    else:
        table = pq.read_table(tmp_path / "telemetry.parquet")
        rows = table.to_pylist()
        event_rows = pq.read_table(tmp_path / "events.parquet").to_pylist()
        held = Counter({name: len(table) - table[name].null_count for name in table.column_names})
        columns = set(table.column_names)
        assert table.schema.field("o2_pct").type == "double"
        assert table.schema.field("seq").type == "int64"
    assert len(rows) == telemetry
    for name, count in fields.items():  # every series: as many points as the store holds
        assert held[name] == count, name
    assert {"o2_pct", "co2_pct", "n2_lpm", "air_lpm", "co2_lpm", "exposure_s"} <= columns
    assert len(event_rows) == events  # the journal's events are the store's, one for one
    kinds = [r["kind"] for r in event_rows]
    assert kinds.count("harvest_due") == 2


@pytest.fixture(scope="module")
def archived(door: DoorRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh archive of the door run."""
    if shutil.which("chromium") is None:
        pytest.skip("needs chromium (scripts/test installs it)")
    out = tmp_path_factory.mktemp("archive")
    result = hypoxia("archive", door.run_id, "--site", str(door.site), "--out", str(out))
    assert result.returncode == 0, result.stderr
    path = out / f"{door.run_id}.zip"
    assert f"archive: {path}" in result.stdout
    return path


def test_a_fresh_archive_verifies(archived: Path, door: DoorRun) -> None:
    with zipfile.ZipFile(archived) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        html = zf.read("record.html").decode()
        audit = json.loads(zf.read("audit.json"))
    assert {
        "record.html",
        "record.pdf",
        "data/telemetry.csv",
        "data/events.csv",
        "recipe.toml",
        "site/site.toml",
        "audit.json",
        "manifest.json",
        "manifest.sha256",
    } == names
    head = manifest["audit_head"]
    assert f"seq {head['seq']}" in html  # the record prints the chain head it was made at
    assert head["hash"] in html
    assert [r["seq"] for r in audit] == list(range(1, head["seq"] + 1))
    for args in (
        ("archive", "verify", str(archived)),
        ("archive", "verify", str(archived), "--site", str(door.site)),
    ):
        result = hypoxia(*args)
        assert result.returncode == 0, result.stdout
        assert result.stdout.startswith("ok:")


def _rewrite(src: Path, dst: Path, change: str | None = None, drop: str | None = None) -> None:
    """Copy an archive, flipping one byte of member ``change`` or leaving out ``drop``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == drop:
                continue
            data = zin.read(info.filename)
            if info.filename == change:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
            zout.writestr(info.filename, data)


def test_any_changed_byte_of_any_member_fails_naming_it(archived: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(archived) as zf:
        names = zf.namelist()
    for name in names:
        copy = tmp_path / f"changed-{name.replace('/', '_')}.zip"
        _rewrite(archived, copy, change=name)
        verdict = verify_archive(copy)
        assert not verdict.ok, name
        assert f"member {name}" in verdict.problems[0], (name, verdict.problems)
    result = hypoxia("archive", "verify", str(tmp_path / "changed-record.pdf.zip"))
    assert result.returncode == 1
    assert "member record.pdf was changed" in result.stdout


def test_a_removed_member_fails_naming_it(archived: Path, tmp_path: Path) -> None:
    for name in ("data/telemetry.csv", "audit.json", "manifest.sha256"):
        copy = tmp_path / "removed.zip"
        _rewrite(archived, copy, drop=name)
        result = hypoxia("archive", "verify", str(copy))
        assert result.returncode == 1, name
        assert f"member {name} is missing" in result.stdout


def test_a_corrupted_zip_fails_naming_the_member(archived: Path, tmp_path: Path) -> None:
    """A byte flipped in the zip file itself (not rewritten): the member no longer reads back."""
    with zipfile.ZipFile(archived) as zf:
        info = zf.getinfo("recipe.toml")
    raw = bytearray(archived.read_bytes())
    offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 4
    raw[offset] ^= 0xFF
    copy = tmp_path / "corrupt.zip"
    copy.write_bytes(bytes(raw))
    verdict = verify_archive(copy)
    assert not verdict.ok
    assert "member recipe.toml" in verdict.problems[0]


def test_audit_records_disagreeing_with_the_live_trail_fail(
    archived: Path, door: DoorRun, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(door.site.parent / "state", state)
    site = tmp_path / "site.toml"
    site.write_text(door.site.read_text().replace(str(door.site.parent / "state"), str(state)))
    conn = sqlite3.connect(state / "audit.sqlite", isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET reason = 'edited later' WHERE seq = 2")
    conn.close()
    verdict = verify_archive(archived, ReadOnlyAudit.open_ro(state / "audit.sqlite"))
    assert "the live audit trail does not verify" in verdict.problems[0]
    assert any("member audit.json: record 2 differs" in p for p in verdict.problems)
    result = hypoxia("archive", "verify", str(archived), "--site", str(site))
    assert result.returncode == 1
    assert "record 2 differs from the live trail (reason)" in result.stdout
