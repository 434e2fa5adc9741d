"""Where the recorder writes points: InfluxDB 1.x, the InfluxDB v2 write API, or SQLite.

Every store takes a batch of :class:`~recorder.points.Point` and either has all of it, or raises:

* :class:`StoreUnavailable` - try again later (connection refused, timeout, 5xx, 429, credentials):
  the batch stays in the spool;
* :class:`StoreRefused` - the store will never take these points as they are (400, 413, 422):
  the writer retries message by message and sets aside only the ones refused.

Writes are idempotent: a point is keyed by measurement, tags and timestamp, so writing a batch
twice (after a crash, or a replay) changes nothing. Retries, batching and the spool live in
:mod:`recorder.service`, not here: influxdb-client's async API has neither, and raises raw aiohttp
errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, cast

import aiohttp
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from common.config_errors import ConfigError
from recorder.points import Point
from telemetry.config import InfluxDB1Store, InfluxDB2Store, SqliteStore, StoreConfig

MICROSECONDS = cast("WritePrecision", WritePrecision.US)  # the generated enum is a plain str
HTTP_TIMEOUT_S = 10.0
"""Longest an HTTP write may take before it counts as failed, s."""


class StoreUnavailable(Exception):  # noqa: N818 - reads as a state, like TimeoutError
    """The store cannot take points now; the same batch may succeed later."""


class StoreRefused(Exception):  # noqa: N818
    """The store will not take these points (bad data, too large); retrying will not help."""


class Store(Protocol):
    """A time-series store the recorder writes to."""

    description: str
    """For logs: kind and where (no secrets)."""

    async def open(self) -> None:
        """Connect and prepare (database, table); raises :class:`StoreUnavailable`."""

    async def write(self, points: Sequence[Point]) -> None:
        """Write all points, or raise :class:`StoreUnavailable` / :class:`StoreRefused`."""

    async def close(self) -> None:
        """Release connections."""


def _check_http(status: int, body: str, what: str) -> None:
    """Raise for an unsuccessful HTTP status of a write."""
    if 200 <= status < 300:
        return
    text = f"{what}: HTTP {status}: {body.strip()[:300]}"
    if status in (400, 413, 422):
        raise StoreRefused(text)
    raise StoreUnavailable(text)


def _body(points: Sequence[Point]) -> str:
    return "\n".join(p.line() for p in points)


class InfluxV1(Store):
    """InfluxDB 1.x: ``POST /write?db=..&precision=u`` with line protocol (aiohttp)."""

    def __init__(self, config: InfluxDB1Store) -> None:
        self.config = config
        self.description = f"InfluxDB 1.x at {config.url}, database '{config.database}'"
        self._session: aiohttp.ClientSession | None = None
        self._database_ready = False

    async def open(self) -> None:
        """Open the HTTP session and create the database (idempotent)."""
        if self._session is None:
            auth = None
            if self.config.username is not None:
                auth = aiohttp.BasicAuth(self.config.username, self.config.password or "")
            self._session = aiohttp.ClientSession(
                auth=auth, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
            )
        await self._create_database()

    async def _create_database(self) -> None:
        query = f'CREATE DATABASE "{self.config.database}"'
        status, body = await self._post("/query", {"q": query}, None)
        if status in (401, 403):
            # a write-only user may not create databases; the database may well exist
            self._database_ready = True
            return
        _check_http(status, body, query)
        error = next((r.get("error") for r in json.loads(body).get("results", [])), None)
        if error:
            raise StoreUnavailable(f"{query}: {error}")
        self._database_ready = True

    async def _post(self, path: str, params: dict[str, str], data: str | None) -> tuple[int, str]:
        if self._session is None:
            msg = "store not opened"
            raise StoreUnavailable(msg)
        try:
            async with self._session.post(
                f"{self.config.url}{path}", params=params, data=data
            ) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise StoreUnavailable(f"{self.config.url}: {exc!r}") from exc

    async def write(self, points: Sequence[Point]) -> None:
        """Write line protocol with microsecond timestamps."""
        if not self._database_ready:
            await self._create_database()
        params = {"db": self.config.database, "precision": "u"}
        if self.config.retention_policy:
            params["rp"] = self.config.retention_policy
        status, body = await self._post("/write", params, _body(points))
        if status == 404:  # database dropped under us: create it again next time
            self._database_ready = False
        _check_http(status, body, "write")

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class InfluxV2(Store):
    """InfluxDB 2.x / 3.x or VictoriaMetrics through ``/api/v2/write`` (influxdb-client async)."""

    def __init__(self, config: InfluxDB2Store) -> None:
        self.config = config
        self.description = f"InfluxDB v2 write API at {config.url}, bucket '{config.bucket}'"
        self.token = config.token
        if config.token_env:
            self.token = os.environ.get(config.token_env)
            if self.token is None:
                raise ConfigError(
                    "recorder.store",
                    "token_env",
                    f"environment variable {config.token_env} is unset",
                )
        self._client: InfluxDBClientAsync | None = None

    async def open(self) -> None:
        """Create the client (it must be created inside a coroutine)."""
        if self._client is not None:
            return
        self._client = InfluxDBClientAsync(
            self.config.url,
            token=self.token or "",
            org=self.config.org,
            timeout=HTTP_TIMEOUT_S * 1000,
        )

    async def write(self, points: Sequence[Point]) -> None:
        """Write line protocol with microsecond precision."""
        if self._client is None:
            msg = "store not opened"
            raise StoreUnavailable(msg)
        try:
            await self._client.write_api().write(
                self.config.bucket,
                self.config.org,
                record=_body(points),
                write_precision=MICROSECONDS,
            )
        except ApiException as exc:
            _check_http(int(exc.status or 0), str(exc.body or exc.reason), "write")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"{self.config.url}: {exc!r}") from exc

    async def close(self) -> None:
        """Close the client."""
        if self._client is not None:
            await self._client.close()
            self._client = None


_SQLITE_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS points (
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    fields TEXT NOT NULL,
    PRIMARY KEY (measurement, tags, time_us)
) WITHOUT ROWID;
"""


class Sqlite(Store):
    """Points in a SQLite table keyed by (measurement, tags JSON, time_us); UPSERT on conflict."""

    def __init__(self, config: SqliteStore, state_dir: Path) -> None:
        self.path = config.path if config.path.is_absolute() else state_dir / config.path
        self.description = f"SQLite {self.path}"
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open (and create) the file and its table."""
        await asyncio.to_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.executescript(_SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc
        self._db = db
        return db

    async def write(self, points: Sequence[Point]) -> None:
        """Upsert the points in one transaction (off the event loop)."""
        rows = [
            (
                p.measurement,
                json.dumps(p.tags, sort_keys=True, separators=(",", ":")),
                p.time_us,
                json.dumps(p.fields, sort_keys=True, separators=(",", ":")),
            )
            for p in points
        ]
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[tuple[str, str, int, str]]) -> None:
        db = self._db or self._open()
        try:
            with db:
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO points (measurement, tags, time_us, fields) VALUES (?,?,?,?) "
                    "ON CONFLICT DO UPDATE SET fields = excluded.fields",
                    rows,
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None


def make_store(config: StoreConfig, state_dir: Path) -> Store:
    """The store for a ``[recorder.store]`` section (``ConfigError`` for a missing token)."""
    if isinstance(config, InfluxDB1Store):
        return InfluxV1(config)
    if isinstance(config, InfluxDB2Store):
        return InfluxV2(config)
    return Sqlite(config, state_dir)
