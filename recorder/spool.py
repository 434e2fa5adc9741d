"""The recorder's durable spool: a write-ahead queue of points, in one SQLite file.

Every accepted message's points are committed here (WAL, ``synchronous=FULL``) *before* the
message is acknowledged to the broker; the writer then moves them to the store in order and deletes
them. While the store is down the spool simply grows, up to ``max_spool_mb``. The same transaction
records the per-reactor sequence state of :mod:`recorder.gaps`, any refused message and any audit
head seen in a retained state message, so what was acknowledged, what is missing and what was
refused always agree after a crash.

The ``audit_heads`` table is the recorder's external copy of the controller's audit-trail head
(seq, hash), one row per head seen; ``hypoxia audit verify`` compares the trail with it
(:func:`read_audit_heads`). A site split among controller partitions has one trail per partition;
column ``trail`` says whose head a row is (``""``: the site's one trail).

Stdlib ``sqlite3``, called synchronously from the event loop: a commit of a few messages takes a
millisecond or two, and the acknowledgement must wait for it anyway.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.names import safe_file_stem
from recorder.gaps import SeqState
from recorder.intake import Accepted, Refused
from recorder.points import Point

_SCHEMA = """
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    points TEXT NOT NULL,
    n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seq_state (
    reactor TEXT PRIMARY KEY,
    contiguous INTEGER NOT NULL,
    above TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lost (
    reactor TEXT NOT NULL,
    from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_heads (
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    reactor TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    PRIMARY KEY (seq, hash)
);
"""


@dataclass(frozen=True, slots=True)
class HeadSeen:
    """An audit-trail head as a reactor's state message carried it."""

    seq: int
    hash: str
    reactor: str
    ts_ms: int
    trail: str = ""


KEEP_REFUSED = 10_000
"""Refused messages kept for inspection (the oldest are dropped past this)."""
MEMORY_POINTS = 10_000
"""Points of the newest spooled messages also kept in memory (about 3 KB each as Python objects),
so the writer takes them from there instead of reading and decoding them back; past this (a long
store outage, or a ``batch_size`` above it) the writer reads the file until it has caught up."""


def spool_path(state_dir: Path, client_id: str) -> Path:
    """Where the recorder with MQTT client id ``client_id`` keeps its spool.

    The file name is bounded (a long id is cut and keeps a hash of itself: common/names.py), so
    no client id makes a name the file system refuses.
    """
    return state_dir / "recorder" / f"{safe_file_stem(client_id)}.spool.sqlite"


def encode_points(points: Iterable[Point]) -> str:
    """Points as compact JSON (ints stay ints, floats stay floats)."""
    return json.dumps(
        [[p.measurement, p.tags, p.fields, p.time_us] for p in points], separators=(",", ":")
    )


def decode_points(text: str) -> list[Point]:
    """Inverse of :func:`encode_points`."""
    return [Point(m, tags, fields, t) for m, tags, fields, t in json.loads(text)]


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Spooled points, oldest first, up to and including row ``last_id``."""

    last_id: int
    rows: list[tuple[int, list[Point]]]
    size: int

    @property
    def points(self) -> list[Point]:
        """All points of the batch, in order."""
        return [p for _, points in self.rows for p in points]


class Spool:
    """A SQLite write-ahead spool of points plus the recorder's sequence state."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA synchronous = FULL")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(seq_state)")}
        if "announced" not in columns:  # a spool of an earlier version
            self._db.execute(
                "ALTER TABLE seq_state ADD COLUMN announced INTEGER NOT NULL DEFAULT 0"
            )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(audit_heads)")}
        if "trail" not in columns:  # a spool of an earlier version: its heads are the site's
            self._db.execute("ALTER TABLE audit_heads ADD COLUMN trail TEXT NOT NULL DEFAULT ''")
        rows, points, size = self._db.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(points)), 0) FROM spool"
        ).fetchone()
        self.rows: int = rows
        """Messages waiting for the store."""
        self.points: int = points
        """Points waiting for the store."""
        self.bytes: int = size
        """Size of the waiting points (JSON), bytes."""
        # the newest spooled rows as committed: (id, points, JSON size), oldest first; always a
        # run of the newest rows, so when it holds as many rows as the file, it holds them all
        self._memory: deque[tuple[int, list[Point], int]] = deque()
        self._memory_points = 0

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def load_states(self) -> dict[str, SeqState]:
        """Per-reactor sequence state as last committed."""
        return {
            reactor: SeqState(contiguous, json.loads(above), announced)
            for reactor, contiguous, above, announced in self._db.execute(
                "SELECT reactor, contiguous, above, announced FROM seq_state"
            )
        }

    def commit(
        self,
        items: Sequence[Accepted | Refused],
        states: dict[str, SeqState],
        lost: dict[str, list[tuple[int, int]]] | None = None,
        heads: Sequence[HeadSeen] = (),
    ) -> None:
        """Spool accepted points, keep refused messages, save states and heads, in one go."""
        accepted = [i.points for i in items if isinstance(i, Accepted) and i.points]
        spooled = [(encode_points(points), len(points)) for points in accepted]
        refused = [(i.topic, i.reason, i.payload) for i in items if isinstance(i, Refused)]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO spool (points, n) VALUES (?, ?)", spooled)
            # one writer holds the lock: the rows just inserted have consecutive ids ending here
            last_id = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
            if refused:
                db.executemany(
                    "INSERT INTO refused (topic, reason, payload) VALUES (?,?,?)", refused
                )
                db.execute(
                    "DELETE FROM refused WHERE id <= (SELECT max(id) FROM refused) - ?",
                    (KEEP_REFUSED,),
                )
            db.executemany(
                "INSERT INTO seq_state (reactor, contiguous, above, announced) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (reactor) DO UPDATE SET contiguous = excluded.contiguous, "
                "above = excluded.above, announced = excluded.announced",
                [(r, s.contiguous, json.dumps(s.above), s.announced) for r, s in states.items()],
            )
            db.executemany(
                "INSERT OR IGNORE INTO audit_heads (seq, hash, reactor, ts_ms, trail) "
                "VALUES (?,?,?,?,?)",
                [(h.seq, h.hash, h.reactor, h.ts_ms, h.trail) for h in heads],
            )
            db.executemany(
                "INSERT INTO lost (reactor, from_seq, to_seq) VALUES (?, ?, ?)",
                [(r, lo, hi) for r, ranges in (lost or {}).items() for lo, hi in ranges],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.rows += len(spooled)
        self.points += sum(n for _, n in spooled)
        self.bytes += sum(len(text) for text, _ in spooled)
        first_id = last_id - len(spooled) + 1
        for k, (points, (text, n)) in enumerate(zip(accepted, spooled, strict=True)):
            if self._memory_points + n > MEMORY_POINTS:
                self._memory.clear()  # keep only the newest rows (the rest stay in the file)
                self._memory_points = 0
            self._memory.append((first_id + k, points, len(text)))
            self._memory_points += n

    def batch(self, max_points: int) -> SpoolBatch | None:
        """The oldest spooled points, about ``max_points`` (whole messages), or ``None``.

        From memory when it holds every spooled row (the usual case: the store keeps up), else
        read back from the file.
        """
        rows: list[tuple[int, list[Point]]] = []
        count = size = 0
        if self._memory and len(self._memory) == self.rows:
            for row_id, points, n_bytes in self._memory:
                rows.append((row_id, points))
                count += len(points)
                size += n_bytes
                if count >= max_points:
                    break
            return SpoolBatch(rows[-1][0], rows, size)
        for row_id, text in self._db.execute(
            "SELECT id, points FROM spool ORDER BY id LIMIT ?", (max_points,)
        ):
            rows.append((row_id, decode_points(text)))
            count += len(rows[-1][1])
            size += len(text)
            if count >= max_points:
                break
        return SpoolBatch(rows[-1][0], rows, size) if rows else None

    def remove(self, batch: SpoolBatch) -> None:
        """Delete a batch once the store has it (the writer is the only one deleting)."""
        self._db.execute("DELETE FROM spool WHERE id <= ?", (batch.last_id,))
        while self._memory and self._memory[0][0] <= batch.last_id:
            self._memory_points -= len(self._memory.popleft()[1])
        self.rows -= len(batch.rows)
        self.points -= sum(len(points) for _, points in batch.rows)
        self.bytes -= batch.size
        if not self.rows:  # give the space of a long outage back to the file system
            self._db.execute("PRAGMA incremental_vacuum")

    def refuse_rows(self, rows: Sequence[tuple[int, list[Point]]], reason: str) -> None:
        """Move spooled points the store refuses for good to the ``refused`` table."""
        self._db.executemany(
            "INSERT INTO refused (topic, reason, payload) VALUES ('(store)', ?, ?)",
            [(reason, encode_points(points).encode()) for _, points in rows],
        )

    def audit_head(self, trail: str = "") -> tuple[int, str] | None:
        """The highest head seen so far of one audit trail (``None``: none)."""
        row = self._db.execute(
            "SELECT seq, hash FROM audit_heads WHERE trail = ? ORDER BY seq DESC, ts_ms DESC "
            "LIMIT 1",
            (trail,),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def knows_head(self, seq: int, digest: str) -> bool:
        """True when this exact head was seen before."""
        row = self._db.execute(
            "SELECT 1 FROM audit_heads WHERE seq = ? AND hash = ?", (seq, digest)
        ).fetchone()
        return row is not None

    def count(self, table: str) -> int:
        """Rows in ``refused``, ``lost`` or ``spool``."""
        if table not in {"refused", "lost", "spool"}:
            msg = f"no table '{table}'"
            raise ValueError(msg)
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def read_audit_heads(path: Path, trail: str = "") -> list[HeadSeen]:
    """The heads of one audit trail a recorder's spool holds, highest first (opened read-only).

    ``trail``: a controller partition's name, ``""`` for a site's one trail.
    """
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(audit_heads)")}
        if not columns:  # a spool of an earlier version: no heads
            return []
        where = "WHERE trail = ?" if "trail" in columns else "WHERE ? = ''"
        rows = db.execute(
            f"SELECT seq, hash, reactor, ts_ms FROM audit_heads {where} ORDER BY seq DESC",  # noqa: S608
            (trail,),
        ).fetchall()
    return [HeadSeen(int(seq), str(h), str(r), int(ts), trail) for seq, h, r, ts in rows]
