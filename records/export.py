"""A run's data as files: its stored time series and its journaled events, as CSV or Parquet.

``telemetry.csv|parquet`` holds every telemetry point of the run exactly as the store holds it
(one row per control cycle; a column per field, its unit in its name: ``o2_pct``, ``n2_lpm``,
``temp_c``; empty where a point lacks the field). ``events.csv|parquet`` holds every journaled
event (the journal is complete even where the store is not) with its details as JSON.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from recorder.points import event_subject
from records.store import StoredPoint

Format = Literal["csv", "parquet"]
FIRST = (
    "time_utc",
    "time_us",
    "seq",
    "t_s",
    "phase",
    "phase_state",
    "exposure_s",
    "o2_pct",
    "o2_quality",
    "o2_sp_pct",
    "o2_band_pct",
    "do_pct",
    "do_quality",
    "do_sp_pct",
    "co2_pct",
    "co2_quality",
    "co2_sp_pct",
    "temp_c",
    "temp_quality",
    "temp_sp_c",
    "n2_lpm",
    "air_lpm",
    "o2_lpm",
    "co2_lpm",
    "heater_w",
    "pump_on",
    "alarms_active",
)
"""Telemetry columns in this order (any other stored field follows, sorted)."""
INTEGER = frozenset({"time_us", "seq", "pump_on", "alarms_active", "event_seq"})
TEXT = frozenset({"time_utc", "phase", "phase_state", "kind", "subject", "detail_json"})
EVENT_COLUMNS = ("event_seq", "time_utc", "t_s", "kind", "subject", "detail_json")


def telemetry_table(points: Sequence[StoredPoint]) -> dict[str, list[Any]]:
    """Telemetry points as columns (``time_utc`` from the stored microseconds)."""
    extra = sorted({k for p in points for k in p.fields} - set(FIRST))
    columns = [c for c in FIRST if c in ("time_utc", "time_us", "phase") or _held(points, c)]
    table: dict[str, list[Any]] = {c: [] for c in [*columns, *extra]}
    for p in points:
        row = {**p.fields, "time_us": p.time_us, "phase": p.tags.get("phase")}
        row["time_utc"] = _iso(p.time_us)
        for c, values in table.items():
            values.append(row.get(c))
    return table


def events_table(events: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Journaled events as columns, details as JSON text."""
    skip = {"seq", "utc", "t_s", "kind"}
    table: dict[str, list[Any]] = {c: [] for c in EVENT_COLUMNS}
    for ev in events:
        detail = {k: v for k, v in ev.items() if k not in skip}
        table["event_seq"].append(ev["seq"])
        table["time_utc"].append(ev["utc"])
        table["t_s"].append(ev["t_s"])
        table["kind"].append(ev["kind"])
        table["subject"].append(event_subject(detail) or None)
        table["detail_json"].append(json.dumps(detail, sort_keys=True, default=str))
    return table


def _held(points: Sequence[StoredPoint], column: str) -> bool:
    return any(column in p.fields for p in points)


def _iso(time_us: int) -> str:
    stamp = datetime.fromtimestamp(time_us // 1_000_000, UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{time_us % 1_000_000:06d}Z"


def write_table(table: dict[str, list[Any]], path: Path, fmt: Format) -> Path:
    """Write one table as CSV (empty cell: no value) or Parquet (typed, nulls kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(table)
            writer.writerows(
                ["" if v is None else v for v in row] for row in zip(*table.values(), strict=True)
            )
        return path
    arrays = {name: pa.array(values, type=_type(name, values)) for name, values in table.items()}
    pq.write_table(pa.table(arrays), path, compression="zstd")
    return path


def _type(name: str, values: Sequence[Any]) -> Any:
    if name in INTEGER:
        return pa.int64()
    if name in TEXT or name.endswith("_quality") or any(isinstance(v, str) for v in values):
        return pa.string()
    return pa.float64()


def write_export(
    points: Sequence[StoredPoint], events: Sequence[dict[str, Any]], out_dir: Path, fmt: Format
) -> dict[str, Path]:
    """Write ``telemetry.<fmt>`` and ``events.<fmt>`` into ``out_dir``; return their paths."""
    return {
        "telemetry": write_table(telemetry_table(points), out_dir / f"telemetry.{fmt}", fmt),
        "events": write_table(events_table(events), out_dir / f"events.{fmt}", fmt),
    }
