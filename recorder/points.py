"""MQTT telemetry and event messages -> store points (line protocol), per docs/mqtt.md.

One converter for every store: InfluxDB 1.x (``/write``), InfluxDB 2/3 and VictoriaMetrics
(``/api/v2/write``), and the embedded SQLite store. Timestamps are microseconds,
``ts_ms * 1000 + seq % 1000``: two messages of one cycle never collide, and a replayed or duplicated
message lands on exactly the same series and timestamp.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from influxdb_client.client.write.point import Point as LibraryPoint
from influxdb_client.domain.write_precision import WritePrecision

from common.harvest_stats import CELLS_KEYS

TELEMETRY_TAGS = ("site", "reactor", "run_id", "phase")
"""Telemetry message keys that become tags (low cardinality)."""
EVENT_TAGS = ("site", "reactor", "run_id")
SKIP = frozenset({"v", "ts_ms", "replay", *TELEMETRY_TAGS})
HARVEST_FIELDS = (
    "exposure_s",
    "o2_mean_pct",
    "in_band_frac",
    "excursions",
    "dose_error_pct_h",
    # the cells side (a reactor with [reactors.culture]; docs/physics.md §B7)
    *CELLS_KEYS,
)


@dataclass(frozen=True, slots=True)
class Point:
    """One point: measurement, tags, fields and a microsecond timestamp."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    time_us: int = 0

    def line(self) -> str:
        r"""The point in InfluxDB line protocol (microsecond precision).

        Escaping is influxdb-client's :class:`~influxdb_client.Point`; the one thing added here is
        that a line break inside a string field is written as the two characters ``\\n``: line
        protocol ends a point at a raw newline on InfluxDB 1.x, so a value must never carry one.
        """
        point = LibraryPoint(self.measurement)
        point.time(self.time_us, WritePrecision.US)
        for key, tag in self.tags.items():
            point.tag(key, tag)
        for key, value in self.fields.items():
            safe = (
                value.replace("\n", "\\n").replace("\r", "\\r") if isinstance(value, str) else value
            )
            point.field(key, safe)
        return str(point.to_line_protocol())


def timestamp_us(message: dict[str, Any]) -> int:
    """``ts_ms * 1000 + seq % 1000``."""
    return int(message["ts_ms"]) * 1000 + int(message.get("seq", 0)) % 1000


def _tags(message: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    return {k: str(message[k]) for k in keys if message.get(k) is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def telemetry_points(message: dict[str, Any]) -> list[Point]:
    """One ``telemetry`` point from a telemetry message."""
    fields: dict[str, float | int | str | bool] = {"seq": int(message["seq"])}
    for key, value in message.items():
        if key in SKIP or key == "seq":
            continue
        if key == "pump_on":
            fields[key] = 1 if value else 0
        elif key.endswith("_quality") or key == "phase_state":
            if value is not None:
                fields[key] = str(value)
        else:
            number = _number(value)
            if number is not None:
                fields[key] = number
    return [Point("telemetry", _tags(message, TELEMETRY_TAGS), fields, timestamp_us(message))]


def event_points(message: dict[str, Any]) -> list[Point]:
    """An ``event`` point, plus a ``harvest`` point for harvest events."""
    detail: dict[str, Any] = message.get("detail") or {}
    tags = {**_tags(message, EVENT_TAGS), "kind": str(message["kind"])}
    subject = event_subject(detail)
    if subject:
        tags["subject"] = subject
    fields: dict[str, float | int | str | bool] = {
        "seq": int(message["seq"]),
        "detail": json.dumps(detail, sort_keys=True, default=str),
    }
    t_s = _number(message.get("t_s"))
    if t_s is not None:
        fields["t_s"] = t_s
    if message["kind"] == "alarm":
        fields["alarm"] = str(detail.get("alarm", ""))
        fields["to"] = str(detail.get("to", ""))
    time_us = timestamp_us(message)
    points = [Point("event", tags, fields, time_us)]
    if message["kind"] in ("harvest_due", "harvest_done"):
        name = detail.get("name") or detail.get("harvest")
        if name:
            htags = {**_tags(message, EVENT_TAGS), "harvest": str(name)}
            hfields: dict[str, float | int | str | bool] = {}
            if message["kind"] == "harvest_due":
                for key in HARVEST_FIELDS:
                    number = _number(detail.get(key))
                    if number is not None:
                        hfields[key] = number
                hfields["forced"] = 1 if detail.get("forced_by_latest") else 0
            else:
                hfields["done"] = 1
                volume = _number(detail.get("volume_ml"))
                if volume is not None:
                    hfields["volume_ml"] = volume
            points.append(Point("harvest", htags, hfields, time_us))
    return points


SUBJECT_KEYS = ("alarm", "harvest", "name", "interlock", "role", "variable", "phase")


def event_subject(detail: dict[str, Any]) -> str:
    """What an event is about (alarm, harvest, interlock, phase ... name), for the ``subject`` tag.

    Bounded cardinality, and it keeps two events of one cycle on different series even in a
    store with millisecond timestamps (VictoriaMetrics).
    """
    for key in SUBJECT_KEYS:
        value = detail.get(key)
        if isinstance(value, str) and value:
            return value[:64]
    return ""


def message_points(kind: str, message: dict[str, Any]) -> list[Point]:
    """Points for a ``telemetry`` or ``event`` message (``ValueError`` for anything else)."""
    if kind == "telemetry":
        return telemetry_points(message)
    if kind == "event":
        return event_points(message)
    msg = f"no points for message kind '{kind}'"
    raise ValueError(msg)
