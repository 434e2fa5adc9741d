"""The same record from InfluxDB 1.6.7 as from the embedded SQLite store: the store is read back
through InfluxQL, and every figure of the record matches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli import hypoxia
from tests.records_kit import DoorRun, door_run, load_influxdb1, load_sqlite, record_of
from tests.servers import InfluxDB1

pytestmark = pytest.mark.skipif(
    not InfluxDB1.available(), reason="needs influxd (scripts/test installs it)"
)


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path_factory.mktemp("influxdb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, influx: InfluxDB1) -> DoorRun:
    """The door run, recorded into SQLite and into InfluxDB (database 'records')."""
    run = asyncio.run(door_run(tmp_path_factory.mktemp("door")))
    asyncio.run(load_sqlite(run))
    asyncio.run(load_influxdb1(influx.url, "records", run))
    return run


def _influx_site(door: DoorRun, influx: InfluxDB1, tmp: Path, database: str) -> Path:
    site = tmp / "influx-site.toml"
    store = (
        f'\n[recorder.store]\nkind = "influxdb1"\nurl = "{influx.url}"\ndatabase = "{database}"\n'
    )
    site.write_text(door.site.read_text() + store)
    return site


def test_record_from_influxdb_matches_the_sqlite_one(
    door: DoorRun, influx: InfluxDB1, tmp_path: Path
) -> None:
    from_sqlite = record_of(door.site, door.run_id)
    from_influx = record_of(_influx_site(door, influx, tmp_path, "records"), door.run_id)
    assert from_influx.store.startswith("InfluxDB 1.x")
    assert from_influx.telemetry_points == from_sqlite.telemetry_points > 1000
    assert from_influx.event_points == from_sqlite.event_points
    for a, b in zip(from_influx.harvests, from_sqlite.harvests, strict=True):
        assert (a.exposure_s, a.o2_mean_pct, a.dose_error_pct_h) == (
            b.exposure_s,
            b.o2_mean_pct,
            b.dose_error_pct_h,
        )
        assert [(e.start_s, e.duration_s, e.peak_pct) for e in a.excursions] == [
            (e.start_s, e.duration_s, e.peak_pct) for e in b.excursions
        ]
    assert len(from_influx.harvests[1].excursions) == 1
    assert from_influx.gas_l == pytest.approx(from_sqlite.gas_l)
    assert from_influx.gaps == from_sqlite.gaps == []
    assert from_influx.missing_seq == []


def test_export_from_influxdb(door: DoorRun, influx: InfluxDB1, tmp_path: Path) -> None:
    site = _influx_site(door, influx, tmp_path, "records")
    result = hypoxia(
        "export", door.run_id, "--site", str(site), "--format", "parquet", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "telemetry.parquet")
    assert len(table) == sum(1 for kind, _ in door.messages if kind == "telemetry")


def test_a_missing_database_or_server_is_one_line(
    door: DoorRun, influx: InfluxDB1, tmp_path: Path
) -> None:
    site = _influx_site(door, influx, tmp_path, "nosuchdb")
    result = hypoxia("report", door.run_id, "--site", str(site), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "database not found: nosuchdb" in result.stderr
    site.write_text(site.read_text().replace(influx.url, "http://127.0.0.1:9"))
    result = hypoxia("report", door.run_id, "--site", str(site), "--out", str(tmp_path))
    assert result.returncode == 2
    assert "store unreachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
