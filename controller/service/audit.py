"""Audit trail: append-only, chained records of who did what, when, and why.

Each record holds the UTC time, the user and role, the action and its target, the old and new
values, the reason and the outcome (``accepted`` / ``refused: why``). ``hash`` chains each record
to the one before, so editing, inserting or deleting any row breaks the chain from that row on;
:meth:`AuditTrail.verify` finds the first broken row. SQLite triggers refuse UPDATE and DELETE as
a second line of defence (anyone with the file can drop them; the chain still tells).

**Keyed chain.** A plain SHA-256 chain can be rewritten end to end by anyone holding the file:
delete the last record, rewrite the ``audit_head`` row to match, and the trail verifies. So a
trail is *keyed*: ``hash`` is HMAC-SHA256 under a key kept outside the database (a key file,
``state_dir/audit.key`` by default, 0600, made on first use), and the head row carries its own
HMAC. Without the key nobody can extend, shorten or rewrite the chain unnoticed. The ``audit_meta``
table says which scheme a trail uses:

* ``scheme = hmac-sha256``, ``keyed_from = N``, ``key_id``: records from ``N`` on are keyed (a
  new trail has ``N = 1``; an older, unkeyed trail is keyed from its next record on the first
  open with a key, and its earlier records still verify as plain SHA-256);
* no meta row: an unkeyed trail of an earlier version, verified exactly as before.

What the key does not stop: someone who can read the key (the service's OS user, root) can forge
a consistent trail. Against that, the trail's head is also published with every reactor's
retained MQTT ``state`` message and kept by the recorder (docs/mqtt.md); ``hypoxia audit verify``
compares the trail with that external copy (:func:`check_heads`).

Stdlib ``sqlite3`` rather than aiosqlite: writes are a few hundred bytes, one writer per process,
and ordering must be exactly the order of events, which a synchronous call in the cycle gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from common.config_errors import ConfigError

GENESIS = "0" * 64
"""The previous-hash of the first record."""

SCHEME_SHA256 = "sha256"
"""Unkeyed chain: each hash is SHA-256 of the previous hash and the record."""
SCHEME_HMAC = "hmac-sha256"
"""Keyed chain: each hash is HMAC-SHA256 (audit key) of the previous hash and the record."""
KEY_FILE_NAME = "audit.key"
"""The key file's name next to the trail when no other path is configured."""

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
CREATE TABLE IF NOT EXISTS audit_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_meta_no_update BEFORE UPDATE ON audit_meta
BEGIN SELECT RAISE(ABORT, 'audit meta is write-once'); END;
CREATE TRIGGER IF NOT EXISTS audit_meta_no_delete BEFORE DELETE ON audit_meta
BEGIN SELECT RAISE(ABORT, 'audit meta is write-once'); END;
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


class AuditKeyError(ConfigError):
    """The audit key is missing, unsafe (readable by others) or not the trail's key."""

    def __init__(self, where: Path | str, problem: str) -> None:
        super().__init__(str(where), "", problem)


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


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(prev_hash: str, body: dict[str, Any], key: bytes | None = None) -> str:
    """The chained hash of a record: SHA-256, or HMAC-SHA256 under ``key``."""
    data = prev_hash.encode() + _canonical(body)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, digest: str) -> str:
    """HMAC of the head row: rewriting the head (a shortened trail) needs the key."""
    return hmac.new(key, f"audit-head:{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short fingerprint of a key (tells a wrong key from tampering; reveals nothing)."""
    return hashlib.sha256(b"hypoxia audit key id\0" + key).hexdigest()[:16]


def default_key_path(trail_path: Path) -> Path:
    """``audit.key`` beside the trail (``state_dir/audit.key`` for a site)."""
    return trail_path.parent / KEY_FILE_NAME


def load_key(path: Path) -> bytes:
    """Read an audit key file (64 hex digits).

    Raises:
        AuditKeyError: The file is missing, unreadable, not a key, or readable or writable by
            users other than its owner.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuditKeyError(path, "no audit key file here") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditKeyError(
            path,
            f"mode {stat.S_IMODE(mode):04o} lets other users read or change the audit key; "
            f"allowed: 0600 (chmod 600 {path})",
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise AuditKeyError(path, f"not an audit key (64 hex digits): {exc}") from None
    if len(key) < 32:
        raise AuditKeyError(path, f"the key has {len(key)} bytes; allowed: 32 or more")
    return key


def create_key(path: Path) -> bytes:
    """Make a new random key file (mode 0600); an existing file is loaded, never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(path)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return load_key(path)


@dataclass(frozen=True, slots=True)
class TrailScheme:
    """How a trail is chained (from its ``audit_meta`` rows).

    Attributes:
        scheme: ``sha256`` (unkeyed) or ``hmac-sha256``.
        keyed_from: First keyed record (``None``: unkeyed trail).
        key_id: Fingerprint of the key the trail was keyed with.
    """

    scheme: str = SCHEME_SHA256
    keyed_from: int | None = None
    key_id: str = ""

    @property
    def keyed(self) -> bool:
        """True for a keyed trail."""
        return self.scheme == SCHEME_HMAC

    def describe(self) -> str:
        """One line for ``hypoxia audit verify``."""
        if not self.keyed:
            return (
                "unkeyed (SHA-256 chain of an earlier version: anyone with the file could "
                "rewrite it end to end)"
            )
        older = (
            f"; records 1-{self.keyed_from - 1} predate the key (plain SHA-256)"
            if self.keyed_from and self.keyed_from > 1
            else ""
        )
        return f"keyed (HMAC-SHA256, key id {self.key_id}) from record {self.keyed_from}{older}"


class AuditTrail:
    """Append-only audit table in a SQLite file (shared with the run journal or on its own).

    Args:
        conn: The database (autocommit mode).
        key: The audit key: a new or unkeyed trail becomes keyed from its next record; a keyed
            trail must be opened with its own key. ``None``: an unkeyed trail stays unkeyed.
        writable: ``False`` to inspect a trail without touching its schema (verification).

    Raises:
        AuditKeyError: ``key`` is not the key the trail was keyed with, or a keyed trail is
            opened for writing without a key.
    """

    key: bytes | None = None
    """The audit key (class default ``None``: a read-only subclass verifies what it can)."""

    def __init__(
        self, conn: sqlite3.Connection, key: bytes | None = None, *, writable: bool = True
    ) -> None:
        self.conn = conn
        self.key = key
        if writable:
            conn.executescript(_SCHEMA)
            self._add_head_mac_column()
            self._adopt_key()

    @classmethod
    def open(cls, path: Path, key_file: Path | None = None) -> AuditTrail:
        """Open (creating if needed) the keyed audit trail in ``path``.

        The key is read from ``key_file`` (default ``audit.key`` beside the trail) and made there,
        mode 0600, when the trail is not keyed yet and the file does not exist. A keyed trail
        whose key file is missing is refused rather than given a new key.

        Raises:
            AuditKeyError: The key file is missing for a keyed trail, unsafe, or the wrong key.
        """
        key_path = key_file or default_key_path(path)
        conn = sqlite3.connect(path, isolation_level=None)
        scheme = read_scheme(conn)
        if scheme.keyed and not key_path.exists():
            conn.close()
            raise AuditKeyError(
                key_path,
                f"the audit trail {path} is keyed (key id {scheme.key_id}) but its key file is "
                "missing: restore it from the backup (a new key cannot continue the chain)",
            )
        try:
            key = load_key(key_path) if key_path.exists() else create_key(key_path)
            return cls(conn, key)
        except AuditKeyError as exc:
            conn.close()
            raise AuditKeyError(key_path, exc.problem) from None
        except BaseException:
            conn.close()
            raise

    @classmethod
    def inspect(cls, path: Path, key: bytes | None = None) -> AuditTrail:
        """Open ``path`` read-only for verification (no schema changes, no key made)."""
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return cls(conn, key, writable=False)

    # ----------------------------------------------------------------------- schema and key
    def _add_head_mac_column(self) -> None:
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(audit_head)")}
        if "mac" not in columns:
            self.conn.execute("ALTER TABLE audit_head ADD COLUMN mac TEXT NOT NULL DEFAULT ''")

    def scheme(self) -> TrailScheme:
        """How this trail is chained."""
        return read_scheme(self.conn)

    def _adopt_key(self) -> None:
        """Check the key against a keyed trail, or key an unkeyed one from its next record."""
        key = self.key
        with self.conn:  # one transaction: two processes opening at once key the trail once
            self.conn.execute("BEGIN IMMEDIATE")
            scheme = self.scheme()
            if scheme.keyed:
                if key is None:
                    msg = f"the audit trail is keyed (key id {scheme.key_id}); open it with its key"
                    raise AuditKeyError("audit trail", msg)
                if key_id(key) != scheme.key_id:
                    msg = (
                        f"this key (id {key_id(key)}) is not the key the audit trail was keyed "
                        f"with (id {scheme.key_id}): restore the right key file"
                    )
                    raise AuditKeyError("audit key", msg)
                return
            if key is None:
                return
            records = self.records()
            if records and not verify(records).ok:
                # keying a broken chain would hide the damage: the trail stays unkeyed, and
                # `hypoxia audit verify` keeps reporting the damage
                self.key = None
                return
            seq, digest = (records[-1].seq, records[-1].hash) if records else (0, GENESIS)
            self.conn.executemany(
                "INSERT INTO audit_meta (name, value) VALUES (?, ?)",
                [("scheme", SCHEME_HMAC), ("keyed_from", str(seq + 1)), ("key_id", key_id(key))],
            )
            self._write_head(seq, digest)

    def _write_head(self, seq: int, digest: str) -> None:
        mac = head_mac(self.key, seq, digest) if self.key is not None else ""
        self.conn.execute(
            "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
            "mac = excluded.mac",
            (seq, digest, mac),
        )

    # ------------------------------------------------------------------------------ writing
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
            digest = record_hash(draft.prev_hash, body, self.key)
            self._write_head(int(seq), digest)
            self.conn.execute(
                f"INSERT INTO audit ({', '.join(_FIELDS)}, prev_hash, hash) "  # noqa: S608
                f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))})",
                (*(body[f] for f in _FIELDS), draft.prev_hash, digest),
            )
        return dataclasses.replace(draft, hash=digest)

    def on_behalf(self, actor: str) -> AuditTrail:
        """This trail, recording each entry's user as ``"ACTOR as USER"`` when they differ.

        For an admin acting for another user through the control socket: the record names both.
        """
        return _OnBehalf(self, actor)

    # ------------------------------------------------------------------------------ reading
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

    def _head_mac(self) -> str | None:
        """The head row's HMAC (``None``: no head row, or a trail without the column)."""
        try:
            row = self.conn.execute("SELECT mac FROM audit_head WHERE id = 1").fetchone()
        except sqlite3.OperationalError:
            return None
        return str(row[0]) if row else None

    def _key_beside(self) -> bytes | None:
        """The key in ``audit.key`` beside the database file, if there is one."""
        for _, name, file in self.conn.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                path = default_key_path(Path(file))
                return load_key(path) if path.exists() else None
        return None

    def verify(self, key: bytes | None = None) -> VerifyResult:
        """Verify the chain, and that it ends where the (keyed) head says.

        Args:
            key: The audit key (default: the key the trail was opened with, else ``audit.key``
                beside the database). Without a key the keyed records' structure (numbers, links)
                is checked but not their HMACs (``hmac_checked`` is then false).
        """
        key = key if key is not None else self.key
        scheme = self.scheme()
        records = self.records()
        n = len(records)
        if key is None and scheme.keyed:
            try:
                key = self._key_beside()
            except AuditKeyError as exc:
                return VerifyResult(False, n, str(exc), scheme, hmac_checked=False)
        if scheme.keyed and key is not None and key_id(key) != scheme.key_id:
            return VerifyResult(
                False,
                n,
                f"the key given (id {key_id(key)}) is not the trail's key (id {scheme.key_id}): "
                "verify with the right key file",
                scheme,
            )
        checked = key is not None or not scheme.keyed
        result = verify(records, key, scheme.keyed_from if scheme.keyed else None)
        if not result.ok:
            return dataclasses.replace(result, scheme=scheme, hmac_checked=checked)
        if key is not None and not scheme.keyed:
            return VerifyResult(
                False,
                n,
                "the trail is not keyed although an audit key exists: it was replaced by an "
                "unkeyed copy (or it did not verify when the key was made, so it was not keyed)",
                scheme,
            )
        seq, digest = self.head()
        last_seq, last_hash = (records[-1].seq, records[-1].hash) if records else (0, GENESIS)
        if (seq, digest) != (last_seq, last_hash):
            return VerifyResult(
                False,
                n,
                f"the trail ends at record {last_seq} but its head says "
                f"{seq}: records were deleted or the head was altered",
                scheme,
                checked,
            )
        if scheme.keyed and key is not None:
            mac = self._head_mac()
            if not mac:
                return VerifyResult(
                    False, n, "the head row has no HMAC: it was rewritten", scheme, checked
                )
            if not hmac.compare_digest(mac, head_mac(key, seq, digest)):
                return VerifyResult(
                    False,
                    n,
                    f"the head row (record {seq}) does not carry the audit key's HMAC: it was "
                    f"rewritten, so records after {seq} were probably deleted",
                    scheme,
                    checked,
                )
        return VerifyResult(True, n, "", scheme, checked)


class _OnBehalf(AuditTrail):
    """A view of a trail that names the acting user too (see :meth:`AuditTrail.on_behalf`)."""

    def __init__(self, trail: AuditTrail, actor: str) -> None:
        self.conn = trail.conn
        self.key = trail.key
        self.actor = actor

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
        """Append with ``user`` recorded as ``"ACTOR as USER"`` when it is not the actor."""
        shown = user if user == self.actor else f"{self.actor} as {user}"
        return super().append(utc, shown, role, action, target, old, new, reason, outcome)


def read_scheme(conn: sqlite3.Connection) -> TrailScheme:
    """The chain scheme recorded in a trail's ``audit_meta`` (unkeyed when there is none)."""
    try:
        meta = dict(conn.execute("SELECT name, value FROM audit_meta").fetchall())
    except sqlite3.OperationalError:  # a trail of an earlier version: no meta table
        return TrailScheme()
    if meta.get("scheme") != SCHEME_HMAC:
        return TrailScheme()
    try:
        keyed_from = int(meta.get("keyed_from", "1"))
    except ValueError:
        keyed_from = 1
    return TrailScheme(SCHEME_HMAC, keyed_from, str(meta.get("key_id", "")))


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verification: ``ok``, how many records, and the first problem found.

    Attributes:
        scheme: How the trail is chained.
        hmac_checked: False when keyed records were checked without the key (structure only).
    """

    ok: bool
    count: int
    problem: str = ""
    scheme: TrailScheme = TrailScheme()
    hmac_checked: bool = True


def verify(
    records: list[AuditRecord], key: bytes | None = None, keyed_from: int | None = None
) -> VerifyResult:
    """Check the chain: consecutive sequence numbers, each prev_hash and each recomputed hash.

    Args:
        records: The trail's records in order.
        key: The audit key; records from ``keyed_from`` on are HMACs under it. Without a key,
            their content is not checked (only numbers and links).
        keyed_from: First keyed record (``None``: an unkeyed trail).
    """
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
        keyed = keyed_from is not None and rec.seq >= keyed_from
        if not keyed or key is not None:
            expected = record_hash(prev, rec.body(), key if keyed else None)
            if not hmac.compare_digest(expected, rec.hash):
                what = "its HMAC" if keyed else "its hash"
                return VerifyResult(
                    False, len(records), f"record {rec.seq}: content does not match {what}: edited"
                )
        prev = rec.hash
    return VerifyResult(True, len(records))


@dataclass(frozen=True, slots=True)
class SeenHead:
    """An audit head as seen outside the trail (by a recorder, from the retained MQTT state).

    Attributes:
        seq: Sequence number of the trail's last record then.
        hash: Its hash.
        seen: Where and when it was seen (for the message).
    """

    seq: int
    hash: str
    seen: str = ""


def check_heads(records: list[AuditRecord], heads: Iterable[SeenHead]) -> str:
    """Compare a trail with heads seen outside it; the problem found, or ``""``.

    A head beyond the trail's end means records were deleted from the end (the database alone
    cannot show that once its own head row is rewritten); a head whose hash differs from the
    record of that number means the trail was rewritten from there.
    """
    by_seq = {r.seq: r.hash for r in records}
    last = records[-1].seq if records else 0
    for head in sorted(heads, key=lambda h: -h.seq):
        if head.seq <= 0:
            continue
        where = f" ({head.seen})" if head.seen else ""
        if head.seq > last:
            gone = (
                f"record {head.seq} was"
                if head.seq == last + 1
                else f"records {last + 1}-{head.seq} were"
            )
            return (
                f"the trail ends at seq {last} but the recorder saw head {head.seq} "
                f"(hash {head.hash[:16]}…){where}: {gone} deleted"
            )
        if not hmac.compare_digest(by_seq.get(head.seq, ""), head.hash):
            return (
                f"record {head.seq} is not the one the recorder saw as head {head.seq} "
                f"(hash {head.hash[:16]}…){where}: the trail was rewritten from record "
                f"{head.seq} or earlier"
            )
    return ""
