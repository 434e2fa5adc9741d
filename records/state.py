"""Read-only access to a site's run journal and audit trail.

The service writes both files while a run is going; a record is made from the same files without
writing to them (no schema statements, no locks beyond a reader's), so a report of a running run
never delays a control cycle.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.service.audit import (
    AuditKeyError,
    AuditRecord,
    AuditTrail,
    default_key_path,
    load_key,
)
from controller.service.journal import RunJournal, RunRecord
from controller.service.site import SiteConfig


class RecordError(Exception):
    """Bad input for a record (unknown run, missing file, unreadable store); one line."""


def _connect_ro(path: Path, what: str) -> sqlite3.Connection:
    if not path.exists():
        msg = f"no {what} at {path} (has the site run yet? state_dir is {path.parent})"
        raise RecordError(msg)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    conn.execute("PRAGMA query_only = ON")
    return conn


class ReadOnlyJournal(RunJournal):
    """The run journal's queries on a read-only connection (the schema is not touched)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open_ro(cls, path: Path) -> ReadOnlyJournal:
        """Open ``path`` read-only; :class:`RecordError` when it does not exist."""
        return cls(_connect_ro(path, "run journal"))

    def ended_utc(self, run_id: str) -> datetime | None:
        """When the run ended (``None`` while it is active)."""
        row = self.conn.execute("SELECT ended_utc FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def run_rows(self) -> list[dict[str, Any]]:
        """Every run, oldest first: id, reactor, recipe, start, end, status."""
        rows = self.conn.execute(
            "SELECT run_id, reactor, recipe_name, recipe_sha256, started_utc, ended_utc, status "
            "FROM runs ORDER BY started_utc, run_id"
        ).fetchall()
        keys = ("run_id", "reactor", "recipe", "recipe_sha256", "started_utc", "ended_utc", "state")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def event_counts(self, run_id: str) -> dict[str, int]:
        """Number of journaled events of each kind for a run."""
        rows = self.conn.execute(
            "SELECT kind, COUNT(*) FROM events WHERE run_id = ? GROUP BY kind", (run_id,)
        ).fetchall()
        return {str(k): int(n) for k, n in rows}

    def known_ids(self, limit: int = 5) -> list[str]:
        """The most recent run ids (for error messages)."""
        rows = self.conn.execute(
            "SELECT run_id FROM runs ORDER BY started_utc DESC LIMIT ?", (limit,)
        ).fetchall()
        return [str(r[0]) for r in rows]


class ReadOnlyAudit(AuditTrail):
    """The audit trail's queries and verification on a read-only connection.

    A keyed trail's HMACs are checked when its key file beside it can be read; otherwise only
    the chain's numbers and links are (``key`` stays ``None``).
    """

    def __init__(self, conn: sqlite3.Connection, key: bytes | None = None) -> None:
        self.conn = conn  # no schema writes, no key made
        self.key = key

    @classmethod
    def open_ro(cls, path: Path) -> ReadOnlyAudit:
        """Open ``path`` read-only; :class:`RecordError` when it does not exist."""
        conn = _connect_ro(path, "audit trail")
        try:
            key: bytes | None = load_key(default_key_path(path))
        except (AuditKeyError, OSError):
            key = None
        return cls(conn, key)

    def how_checked(self) -> str:
        """What :meth:`verify` can check of this trail with the key at hand."""
        if not self.scheme().keyed:
            return "SHA-256 chain"
        if self.key is None:
            return "keyed chain; key not readable here, so links only, not the HMACs"
        return "keyed chain, HMACs checked"


@dataclass(slots=True)
class SiteState:
    """The journal and audit trail of one site, opened read-only."""

    site: SiteConfig
    journal: ReadOnlyJournal
    audit: ReadOnlyAudit

    @classmethod
    def open(cls, site: SiteConfig) -> SiteState:
        """Open ``journal.sqlite`` and ``audit.sqlite`` in the site's state directory."""
        journal = ReadOnlyJournal.open_ro(site.state_dir / "journal.sqlite")
        audit = ReadOnlyAudit.open_ro(site.state_dir / "audit.sqlite")
        return cls(site, journal, audit)

    def close(self) -> None:
        """Close both connections."""
        self.journal.close()
        self.audit.conn.close()

    def run(self, run_id: str) -> RunRecord:
        """The run ``run_id``; :class:`RecordError` naming recent runs when it is unknown."""
        run = self.journal.run(run_id)
        if run is None:
            known = ", ".join(self.journal.known_ids()) or "none"
            msg = f"unknown run '{run_id}' in {self.site.state_dir} (recent runs: {known})"
            raise RecordError(msg)
        return run

    def audit_of_run(self, run: RunRecord) -> list[AuditRecord]:
        """Audit records about this run: its commands (accepted or refused), start and resumes."""
        target = f"{run.reactor}/{run.run_id}"
        return [
            r
            for r in self.audit.records()
            if r.target == target
            or (r.action in ("run_start", "run_resume") and f'"{run.run_id}"' in r.new_value)
        ]
