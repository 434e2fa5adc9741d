"""Run journal: what a killed controller needs to resume the same run exactly.

SQLite in WAL mode. Each cycle writes, in **one transaction**, the run's checkpoint (recipe engine
and controller state, the run clock) and the events of that cycle. So a harvest is either released
and journaled, or neither: a restart never repeats or skips one. The journal also keeps the runs
(recipe with its SHA-256 and full text), every event, and outage windows.

Stdlib ``sqlite3`` (not aiosqlite): sub-millisecond transactions, and the checkpoint must be
committed before actuators move on the next cycle. The running service commits cycles through
:class:`~controller.service.commit_group.GroupCommitter` (:meth:`RunJournal.commit_cycles` from a
thread of its own: every reactor that finished meanwhile in one transaction); tests and one-off
writes call :meth:`RunJournal.commit_cycle` directly.
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

PRUNE_MAX_ROWS = 1_000
"""Outbox rows deleted per prune step at most: 15-120 ms of write lock on the loaded reference
machine, mostly the fsync (docs/performance.md), so a step never holds the cycles' commits back
for long."""

_PRUNE_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_pruned (
    reactor TEXT PRIMARY KEY,
    through_seq INTEGER NOT NULL
);
"""
"""Per reactor, the highest sequence number pruned from the outbox (``RunJournal.prune_outbox``).

``outbox.published`` is 0 until the broker's PUBACK, then the UTC milliseconds of that PUBACK
(1 for rows acknowledged by a version that did not keep the time: they count as long ago)."""


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
class CycleCommit:
    """One reactor's cycle as the journal writes it, already serialised (JSON text)."""

    run_id: str
    stamp: str
    run_t_s: float
    engine_json: str
    controller_json: str
    event_rows: list[tuple[str, str, float, str, str]]
    outbox: list[OutboxMessage]

    @classmethod
    def of(
        cls,
        run_id: str,
        utc: datetime,
        run_t_s: float,
        engine: dict[str, Any],
        controller: dict[str, Any],
        events: list[Event],
        outbox: list[OutboxMessage] | None = None,
    ) -> CycleCommit:
        """Serialise a cycle now (the caller's dictionaries may change after this returns)."""
        stamp = utc.isoformat()
        return cls(
            run_id,
            stamp,
            run_t_s,
            json.dumps(engine),
            json.dumps(controller),
            [(run_id, stamp, ev.t_s, ev.kind, json.dumps(ev.detail, default=str)) for ev in events],
            list(outbox or []),
        )


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
        conn.executescript(_PRUNE_SCHEMA)
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
        self.commit_cycles(
            [CycleCommit.of(run_id, utc, run_t_s, engine, controller, events, outbox)]
        )

    def commit_cycles(
        self, cycles: list[CycleCommit], published: list[tuple[str, int, int]] | None = None
    ) -> None:
        """Write the cycles of several reactors in **one** transaction (one fsync for all).

        Each cycle's checkpoint, events and outbox messages stay atomic together, as with
        :meth:`commit_cycle`; the group commit of the service (controller/service/commit_group.py)
        calls this from its own thread with its own connection, with the PUBACKs the MQTT link
        has had meanwhile (``published``: reactor, seq, acked UTC ms), marked in the same
        transaction.
        """
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for reactor, seq, acked_ms in published or []:
                self.mark_published(reactor, seq, acked_ms)
            self.conn.executemany(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "utc = excluded.utc, run_t_s = excluded.run_t_s, engine = excluded.engine, "
                "controller = excluded.controller",
                [(c.run_id, c.stamp, c.run_t_s, c.engine_json, c.controller_json) for c in cycles],
            )
            self.conn.executemany(
                "INSERT INTO events (run_id, utc, run_t_s, kind, detail) VALUES (?, ?, ?, ?, ?)",
                [row for c in cycles for row in c.event_rows],
            )
            self.conn.executemany(
                "INSERT INTO outbox (reactor, seq, topic, payload) VALUES (?, ?, ?, ?)",
                [(m.reactor, m.seq, m.topic, m.payload) for c in cycles for m in c.outbox],
            )

    # ------------------------------------------------------------------------------- outbox
    def next_seq(self, reactor: str) -> int:
        """The next MQTT sequence number of ``reactor`` (1 for a new reactor; never reused)."""
        row = self.conn.execute(
            "SELECT MAX(seq) FROM outbox WHERE reactor = ?", (reactor,)
        ).fetchone()
        return max(int(row[0] or 0), self.pruned_through(reactor)) + 1

    def unpublished(self, limit: int = 500) -> list[OutboxMessage]:
        """Messages the broker has not acknowledged yet, oldest first per reactor."""
        rows = self.conn.execute(
            "SELECT reactor, seq, topic, payload FROM outbox WHERE published = 0 "
            "ORDER BY reactor, seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxMessage(*row) for row in rows]

    def mark_published(self, reactor: str, seq: int, acked_ms: int) -> None:
        """The broker acknowledged message ``seq`` of ``reactor`` at ``acked_ms`` (UTC ms)."""
        self.conn.execute(
            "UPDATE outbox SET published = ? WHERE reactor = ? AND seq = ?",
            (max(1, acked_ms), reactor, seq),
        )

    def mark_published_many(self, acked: list[tuple[str, int, int]]) -> None:
        """Several PUBACKs, each (reactor, seq, acked UTC ms), in one transaction (one fsync).

        The MQTT link marks a batch at once: one fsync per message blocked the event loop for
        milliseconds each, which at hundreds of reactors was most of every second.
        """
        if not acked:
            return
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            for reactor, seq, acked_ms in acked:
                self.mark_published(reactor, seq, acked_ms)

    # ------------------------------------------------------------------------- outbox pruning
    def prune_outbox(self, acked_before_ms: int, max_rows: int = PRUNE_MAX_ROWS) -> int:
        """Delete up to ``max_rows`` outbox rows acknowledged before ``acked_before_ms`` (UTC ms).

        The oldest acknowledged first, in the order of the ``outbox_pending`` index
        (``published`` leads it): one ``DELETE`` of an index range, after noting per reactor the
        highest number deleted (``outbox_pruned``: sequence numbers are never reused, and a
        replay request for a pruned number is answered as such). Messages of a reactor are
        acknowledged in order, so what is pruned is always a prefix of its stream. ``max_rows``
        keeps the write lock short (the cycles' commits wait for it); returns the rows deleted,
        ``max_rows`` when more are due. The space is reused by new rows (the file stops growing
        once the window is full); nothing is vacuumed.
        """
        args = (acked_before_ms - 1, max_rows)  # the same rows, in index order, in both
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT INTO outbox_pruned (reactor, through_seq) "
                "SELECT reactor, MAX(seq) FROM (SELECT reactor, seq FROM outbox "
                "WHERE published BETWEEN 1 AND ? ORDER BY published, reactor, seq LIMIT ?) "
                "GROUP BY reactor "
                "ON CONFLICT (reactor) DO UPDATE SET "
                "through_seq = MAX(through_seq, excluded.through_seq)",
                args,
            )
            cursor = self.conn.execute(
                "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox "
                "WHERE published BETWEEN 1 AND ? ORDER BY published, reactor, seq LIMIT ?)",
                args,
            )
        return cursor.rowcount

    def pruned_through(self, reactor: str) -> int:
        """The highest sequence number of ``reactor`` no longer held (0: nothing pruned)."""
        row = self.conn.execute(
            "SELECT through_seq FROM outbox_pruned WHERE reactor = ?", (reactor,)
        ).fetchone()
        return int(row[0]) if row else 0

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
