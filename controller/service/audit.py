"""Audit trail: append-only, hash-chained records of who did what, when, and why.

Each record holds the UTC time, the user and role, the action and its target, the old and new
values, the reason and the outcome (``accepted`` / ``refused: why``). ``hash`` is SHA-256 over the
previous record's hash and this record's canonical JSON, so editing, inserting or deleting any
row breaks the chain from that row on; :func:`verify` finds the first broken row. SQLite triggers
refuse UPDATE and DELETE as a second line of defence (anyone with the file can drop them; the
chain still tells).

Stdlib ``sqlite3`` rather than aiosqlite: writes are a few hundred bytes, one writer per process,
and ordering must be exactly the order of events, which a synchronous call in the cycle gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
"""The previous-hash of the first record."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    utc TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    old_value TEXT NOT NULL,
    new_value TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
"""

_FIELDS = (
    "seq",
    "utc",
    "user",
    "role",
    "action",
    "target",
    "old_value",
    "new_value",
    "reason",
    "outcome",
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit entry (values are JSON text, so any type can be recorded)."""

    seq: int
    utc: str
    user: str
    role: str
    action: str
    target: str
    old_value: str
    new_value: str
    reason: str
    outcome: str
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The hashed content (everything but the hashes)."""
        return {name: getattr(self, name) for name in _FIELDS}


def record_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """SHA-256 of the previous hash and the canonical JSON of ``body``."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


class AuditTrail:
    """Append-only audit table in a SQLite file (shared with the run journal or on its own)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(_SCHEMA)

    @classmethod
    def open(cls, path: Path) -> AuditTrail:
        """Open (creating if needed) the audit trail in ``path``."""
        return cls(sqlite3.connect(path, isolation_level=None))

    def append(
        self,
        utc: datetime,
        user: str,
        role: str,
        action: str,
        target: str,
        old: Any = None,
        new: Any = None,
        reason: str = "",
        outcome: str = "accepted",
    ) -> AuditRecord:
        """Append one record and return it (committed before returning)."""
        with self.conn:  # commits (or rolls back) the explicit transaction below
            self.conn.execute("BEGIN IMMEDIATE")
            last = self.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            row = last.fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            draft = AuditRecord(
                seq=int(seq),
                utc=utc.isoformat(timespec="milliseconds"),
                user=user,
                role=role,
                action=action,
                target=target,
                old_value=json.dumps(old, sort_keys=True, default=str),
                new_value=json.dumps(new, sort_keys=True, default=str),
                reason=reason,
                outcome=outcome,
                prev_hash=str(prev),
                hash="",
            )
            body = draft.body()
            digest = record_hash(draft.prev_hash, body)
            self.conn.execute(
                "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, "
                "hash = excluded.hash",
                (seq, digest),
            )
            self.conn.execute(
                f"INSERT INTO audit ({', '.join(_FIELDS)}, prev_hash, hash) "  # noqa: S608
                f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))})",
                (*(body[f] for f in _FIELDS), draft.prev_hash, digest),
            )
        return dataclasses.replace(draft, hash=digest)

    def records(self) -> list[AuditRecord]:
        """All records in order."""
        cur = self.conn.execute(
            f"SELECT {', '.join(_FIELDS)}, prev_hash, hash FROM audit "  # noqa: S608
            "ORDER BY seq"
        )
        return [AuditRecord(*row) for row in cur.fetchall()]

    def head(self) -> tuple[int, str]:
        """(sequence number, hash) of the last record as recorded at append time."""
        row = self.conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def verify(self) -> VerifyResult:
        """Verify the chain and that it ends where the head says (a deleted tail shows)."""
        records = self.records()
        result = verify(records)
        if not result.ok:
            return result
        seq, digest = self.head()
        last_seq, last_hash = (records[-1].seq, records[-1].hash) if records else (0, GENESIS)
        if (seq, digest) != (last_seq, last_hash):
            return VerifyResult(
                False,
                len(records),
                f"the trail ends at record {last_seq} but its head says "
                f"{seq}: records were deleted or the head was altered",
            )
        return result


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, how many records, and the first problem found."""

    ok: bool
    count: int
    problem: str = ""


def verify(records: list[AuditRecord]) -> VerifyResult:
    """Check the chain: consecutive sequence numbers, each prev_hash and each recomputed hash."""
    prev = GENESIS
    for expected_seq, rec in enumerate(records, start=1):
        if rec.seq != expected_seq:
            return VerifyResult(
                False,
                len(records),
                f"record {expected_seq} is missing (found seq {rec.seq} there): "
                "a record was deleted or inserted",
            )
        if rec.prev_hash != prev:
            return VerifyResult(
                False,
                len(records),
                f"record {rec.seq}: previous-hash does not match record "
                f"{rec.seq - 1}: a record was deleted, inserted or edited",
            )
        if record_hash(prev, rec.body()) != rec.hash:
            return VerifyResult(
                False, len(records), f"record {rec.seq}: content does not match its hash: edited"
            )
        prev = rec.hash
    return VerifyResult(True, len(records))
