"""Run journal: what a killed controller needs to resume the same run exactly.

SQLite in WAL mode. Each cycle writes, in **one transaction**, the run's checkpoint (recipe engine
and controller state, the run clock) and the events of that cycle. So a harvest is either released
and journaled, or neither: a restart never repeats or skips one. The journal also keeps the runs
(recipe with its SHA-256 and full text), every event, and outage windows.

Stdlib ``sqlite3`` (not aiosqlite): one writer per reactor, sub-millisecond transactions at one per
cycle, and the checkpoint must be committed before actuators move on the next cycle - a synchronous
call gives that order with no thread hop.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.core.recipe_engine import Event

SCHEMA_VERSION = 1

_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    reactor TEXT NOT NULL,
    recipe_name TEXT NOT NULL,
    recipe_sha256 TEXT NOT NULL,
    recipe_toml TEXT NOT NULL,
    started_utc TEXT NOT NULL,
    ended_utc TEXT,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id),
    utc TEXT NOT NULL,
    run_t_s REAL NOT NULL,
    engine TEXT NOT NULL,
    controller TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    utc TEXT NOT NULL,
    run_t_s REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outages (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    start_utc TEXT NOT NULL,
    end_utc TEXT NOT NULL,
    seconds REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    reactor TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (reactor, seq)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(published, reactor, seq);
"""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as journaled."""

    run_id: str
    reactor: str
    recipe_name: str
    recipe_sha256: str
    recipe_toml: str
    started_utc: datetime
    status: str


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An MQTT message waiting in (or kept by) the outbox."""

    reactor: str
    seq: int
    topic: str
    payload: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last committed state of a run."""

    utc: datetime
    run_t_s: float
    engine: dict[str, Any]
    controller: dict[str, Any]


class RunJournal:
    """The journal of one site (all reactors), in one SQLite file."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(_SCHEMA)
        # FULL: a checkpoint survives a power loss too, not only a killed process (one fsync per
        # cycle); otherwise a lost commit could re-release a harvest or reuse sequence numbers
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )

    @classmethod
    def open(cls, path: Path) -> RunJournal:
        """Open (creating if needed) the journal at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(sqlite3.connect(path, isolation_level=None))

    def close(self) -> None:
        """Close the database connection."""
        self.conn.close()

    def start_run(
        self, reactor: str, recipe_name: str, recipe_sha256: str, recipe_toml: str, utc: datetime
    ) -> str:
        """Create a run (status ``active``) and return its id."""
        run_id = f"{reactor}-{utc:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL, 'active')",
                (run_id, reactor, recipe_name, recipe_sha256, recipe_toml, utc.isoformat()),
            )
        return run_id

    def active_run(self, reactor: str) -> RunRecord | None:
        """The run of ``reactor`` that has not ended, if any."""
        row = self.conn.execute(
            "SELECT run_id, reactor, recipe_name, recipe_sha256, recipe_toml, started_utc, status "
            "FROM runs WHERE reactor = ? AND status = 'active' ORDER BY started_utc DESC LIMIT 1",
            (reactor,),
        ).fetchone()
        return _run(row) if row else None

    def run(self, run_id: str) -> RunRecord | None:
        """A run by id."""
        row = self.conn.execute(
            "SELECT run_id, reactor, recipe_name, recipe_sha256, recipe_toml, started_utc, status "
            "FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return _run(row) if row else None

    def commit_cycle(
        self,
        run_id: str,
        utc: datetime,
        run_t_s: float,
        engine: dict[str, Any],
        controller: dict[str, Any],
        events: list[Event],
        outbox: list[OutboxMessage] | None = None,
    ) -> None:
        """Write this cycle's checkpoint, events and outgoing MQTT messages atomically."""
        stamp = utc.isoformat()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "utc = excluded.utc, run_t_s = excluded.run_t_s, engine = excluded.engine, "
                "controller = excluded.controller",
                (run_id, stamp, run_t_s, json.dumps(engine), json.dumps(controller)),
            )
            self.conn.executemany(
                "INSERT INTO events (run_id, utc, run_t_s, kind, detail) VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, stamp, ev.t_s, ev.kind, json.dumps(ev.detail, default=str))
                    for ev in events
                ],
            )
            if outbox:
                self.conn.executemany(
                    "INSERT INTO outbox (reactor, seq, topic, payload) VALUES (?, ?, ?, ?)",
                    [(m.reactor, m.seq, m.topic, m.payload) for m in outbox],
                )

    # ------------------------------------------------------------------------------- outbox
    def next_seq(self, reactor: str) -> int:
        """The next MQTT sequence number of ``reactor`` (1 for a new reactor)."""
        row = self.conn.execute(
            "SELECT MAX(seq) FROM outbox WHERE reactor = ?", (reactor,)
        ).fetchone()
        return int(row[0] or 0) + 1

    def unpublished(self, limit: int = 500) -> list[OutboxMessage]:
        """Messages the broker has not acknowledged yet, oldest first per reactor."""
        rows = self.conn.execute(
            "SELECT reactor, seq, topic, payload FROM outbox WHERE published = 0 "
            "ORDER BY reactor, seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def mark_published(self, reactor: str, seq: int) -> None:
        """The broker acknowledged message ``seq`` of ``reactor``."""
        self.conn.execute(
            "UPDATE outbox SET published = 1 WHERE reactor = ? AND seq = ?", (reactor, seq)
        )

    def replay(
        self, reactor: str, from_seq: int, to_seq: int, limit: int = 10_000
    ) -> list[OutboxMessage]:
        """Messages ``from_seq``..``to_seq`` of ``reactor`` still held in the outbox."""
        rows = self.conn.execute(
            "SELECT reactor, seq, topic, payload FROM outbox WHERE reactor = ? "
            "AND seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (reactor, from_seq, to_seq, limit),
        ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def checkpoint(self, run_id: str) -> Checkpoint | None:
        """The last committed checkpoint of ``run_id``."""
        row = self.conn.execute(
            "SELECT utc, run_t_s, engine, controller FROM checkpoints WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        return Checkpoint(
            datetime.fromisoformat(row[0]), float(row[1]), json.loads(row[2]), json.loads(row[3])
        )

    def record_outage(self, run_id: str, start: datetime, end: datetime) -> None:
        """Record that the controller was not running between ``start`` and ``end``."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO outages VALUES (?, ?, ?, ?)",
                (run_id, start.isoformat(), end.isoformat(), (end - start).total_seconds()),
            )

    def outages(self, run_id: str) -> list[tuple[datetime, datetime]]:
        """Outage windows of a run, oldest first."""
        rows = self.conn.execute(
            "SELECT start_utc, end_utc FROM outages WHERE run_id = ? ORDER BY start_utc", (run_id,)
        ).fetchall()
        return [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in rows]

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Journaled events of a run (optionally of one kind), in order."""
        query = "SELECT seq, utc, run_t_s, kind, detail FROM events WHERE run_id = ?"
        args: tuple[str, ...] = (run_id,)
        if kind is not None:
            query += " AND kind = ?"
            args = (run_id, kind)
        rows = self.conn.execute(query + " ORDER BY seq", args).fetchall()
        return [
            {"seq": r[0], "utc": r[1], "t_s": r[2], "kind": r[3], **json.loads(r[4])} for r in rows
        ]

    def finish_run(self, run_id: str, status: str, utc: datetime) -> None:
        """Mark a run ended (``complete``, ``stopped`` or ``aborted``)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE runs SET status = ?, ended_utc = ? WHERE run_id = ?",
                (status, utc.isoformat(), run_id),
            )


def _run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(row[0], row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5]), row[6])
