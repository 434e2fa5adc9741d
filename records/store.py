"""Reading a run's points back from the recorder's store (the embedded SQLite store, InfluxDB).

The recorder writes three measurements (docs/mqtt.md, :mod:`recorder.points`): ``telemetry`` (one
point per control cycle), ``event`` and ``harvest``, each tagged with ``run_id``. A record reads
them back here, exactly as stored: nothing is resampled or filled in.

* ``sqlite``: the ``points`` table of the recorder's SQLite file (read-only).
* ``influxdb1``: InfluxQL ``SELECT * ... WHERE run_id = '...'`` through ``/query`` (chunked).
* ``influxdb2``: the same InfluxQL through InfluxDB 2.x's v1-compatible ``/query`` with the token
  (the bucket needs a DBRP mapping). VictoriaMetrics answers no InfluxQL: it cannot be read back.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recorder.points import EVENT_TAGS, TELEMETRY_TAGS
from records.state import RecordError
from telemetry.config import InfluxDB1Store, InfluxDB2Store, SqliteStore, StoreConfig

TAGS: dict[str, tuple[str, ...]] = {
    "telemetry": TELEMETRY_TAGS,
    "event": (*EVENT_TAGS, "kind", "subject"),
    "harvest": (*EVENT_TAGS, "harvest"),
}
"""Tag keys of each measurement (everything else is a field)."""
HTTP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One point as stored: microsecond timestamp, tags and fields."""

    time_us: int
    tags: dict[str, str]
    fields: dict[str, Any]


class StoreReader(Protocol):
    """Reads the points of one run back from a store."""

    description: str
    """Kind and location, for the record (no secrets)."""

    def points(self, measurement: str, run_id: str) -> list[StoredPoint]:
        """Every point of ``measurement`` tagged with ``run_id``, oldest first."""
        ...


class SqliteReader:
    """The recorder's embedded SQLite store, opened read-only."""

    def __init__(self, config: SqliteStore, state_dir: Path) -> None:
        self.path = config.path if config.path.is_absolute() else state_dir / config.path
        self.description = f"SQLite store {self.path}"
        if not self.path.exists():
            msg = f"no telemetry store at {self.path} (has the recorder written anything yet?)"
            raise RecordError(msg)
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)

    def points(self, measurement: str, run_id: str) -> list[StoredPoint]:
        """Every point of ``measurement`` for ``run_id`` (JSON tags matched in SQL)."""
        try:
            rows = self._db.execute(
                "SELECT time_us, tags, fields FROM points WHERE measurement = ? "
                "AND json_extract(tags, '$.run_id') = ? ORDER BY time_us",
                (measurement, run_id),
            ).fetchall()
        except sqlite3.Error as exc:
            msg = f"{self.path}: cannot read points: {exc}"
            raise RecordError(msg) from exc
        return [StoredPoint(int(t), json.loads(tags), json.loads(f)) for t, tags, f in rows]


class InfluxQLReader:
    """InfluxQL over HTTP ``/query`` (InfluxDB 1.x; 2.x through its v1 compatibility API)."""

    def __init__(self, url: str, database: str, headers: dict[str, str], what: str) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.headers = headers
        self.description = f"{what} at {self.url}, database '{database}'"

    def points(self, measurement: str, run_id: str) -> list[StoredPoint]:
        """``SELECT * FROM measurement WHERE run_id = '...'`` (chunked, microsecond epoch)."""
        quoted = run_id.replace("\\", "\\\\").replace("'", "\\'")
        query = f'SELECT * FROM "{measurement}" WHERE "run_id" = \'{quoted}\''  # noqa: S608
        tags = TAGS.get(measurement, ())
        out: list[StoredPoint] = []
        for series in self._query(query):
            columns: list[str] = series["columns"]
            for values in series.get("values", []):
                row = dict(zip(columns, values, strict=True))
                time_us = int(row.pop("time"))
                out.append(
                    StoredPoint(
                        time_us,
                        {k: str(row[k]) for k in tags if row.get(k) is not None},
                        {k: v for k, v in row.items() if k not in tags and v is not None},
                    )
                )
        out.sort(key=lambda p: p.time_us)
        return out

    def _query(self, query: str) -> list[dict[str, Any]]:
        params = urllib.parse.urlencode(
            {"db": self.database, "q": query, "epoch": "u", "chunked": "true", "chunk_size": 20000}
        )
        request = urllib.request.Request(  # noqa: S310 - the URL's scheme is validated http(s)
            f"{self.url}/query?{params}", headers=self.headers
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
                body = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()[:200]
            msg = f"{self.description}: HTTP {exc.code}: {detail}"
            raise RecordError(msg) from exc
        except (urllib.error.URLError, OSError) as exc:
            msg = f"{self.description}: store unreachable: {exc}"
            raise RecordError(msg) from exc
        series: list[dict[str, Any]] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            chunk = json.loads(line)
            if "error" in chunk:
                msg = f"{self.description}: {chunk['error']}"
                raise RecordError(msg)
            for result in chunk.get("results", []):
                if "error" in result:
                    msg = f"{self.description}: {result['error']}"
                    raise RecordError(msg)
                series.extend(result.get("series", []))
        return series


def open_reader(config: StoreConfig, state_dir: Path) -> StoreReader:
    """The reader for a ``[recorder.store]`` section; :class:`RecordError` if it cannot be read."""
    if isinstance(config, SqliteStore):
        return SqliteReader(config, state_dir)
    if isinstance(config, InfluxDB1Store):
        headers = {}
        if config.username is not None:
            token = base64.b64encode(f"{config.username}:{config.password or ''}".encode())
            headers["Authorization"] = f"Basic {token.decode()}"
        return InfluxQLReader(config.url, config.database, headers, "InfluxDB 1.x")
    return _influx2(config)


def _influx2(config: InfluxDB2Store) -> StoreReader:
    token = config.token
    if config.token_env:
        token = os.environ.get(config.token_env)
        if token is None:
            msg = f"recorder.store.token_env: environment variable {config.token_env} is unset"
            raise RecordError(msg)
    headers = {"Authorization": f"Token {token}"} if token else {}
    return InfluxQLReader(config.url, config.bucket, headers, "InfluxDB v2 (InfluxQL)")
