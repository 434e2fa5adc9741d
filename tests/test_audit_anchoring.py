"""The audit trail anchored outside its database: a keyed chain (HMAC under a key file) and the
head the recorder saw in the retained state messages. Deleting the last record and rewriting the
head row to match used to pass `hypoxia audit verify`; now the key or the external head shows it."""

from __future__ import annotations

import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from controller.service.audit import (
    AuditKeyError,
    AuditTrail,
    SeenHead,
    check_heads,
    head_mac,
    load_key,
)
from controller.service.site import load_site
from hypoxia.cli_run import audit_app
from recorder.spool import HeadSeen, Spool, read_audit_heads, spool_path
from tests.service_kit import site_file

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _fill(trail: AuditTrail, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        trail.append(
            T0 + timedelta(minutes=i),
            "erik",
            "engineer",
            "set_setpoint",
            "ws1/run",
            2.0,
            2.0 + i / 100,
            f"step {i}",
        )


def _site(tmp_path: Path) -> tuple[Path, Path]:
    """A site file and its audit trail path (state_dir/audit.sqlite)."""
    path = site_file(tmp_path)
    state_dir = load_site(path).state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    return path, state_dir / "audit.sqlite"


def _recorder_saw(state_dir: Path, trail: AuditTrail) -> None:
    """The recorder's spool holds the trail's head now (as the retained state carried it)."""
    seq, digest = trail.head()
    spool = Spool(spool_path(state_dir, "hypoxia-recorder-sim"))
    spool.commit([], {}, None, [HeadSeen(seq, digest, "ws1", 1_796_198_400_123)])
    spool.close()


def _truncate(db: Path, *, forge_mac_with: bytes | None = None) -> None:
    """Delete the last record and rewrite the head row to match the new last record."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_delete")
    last = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    conn.execute("DELETE FROM audit WHERE seq = ?", (last,))
    seq, digest = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
    if forge_mac_with is not None:  # an attacker who can read the key file
        mac = head_mac(forge_mac_with, seq, digest)
        conn.execute("UPDATE audit_head SET mac = ? WHERE id = 1", (mac,))
    conn.close()


CLI = typer.Typer()
CLI.add_typer(audit_app, name="audit")


def _verify(*args: str) -> tuple[int, str]:
    """``hypoxia audit verify ARGS``."""
    result = CliRunner().invoke(CLI, ["audit", "verify", *args])
    return result.exit_code, result.output


def test_a_new_trail_is_keyed_with_a_private_key_file(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(db)
    _fill(trail, 3)
    key_file = tmp_path / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    result = trail.verify()
    assert result.ok, result.problem
    assert result.scheme.keyed
    assert result.scheme.keyed_from == 1
    # the key file is not in the database: the records' hashes cannot be recomputed without it
    assert key_file.read_text().strip().encode() not in db.read_bytes()
    code, out = _verify(str(db))
    assert code == 0, out
    assert "3 records, chain intact" in out
    assert "keyed (HMAC-SHA256" in out


def test_truncation_with_a_rewritten_head_fails_on_the_head_hmac(tmp_path: Path) -> None:
    site, db = _site(tmp_path)
    trail = AuditTrail.open(db)
    _fill(trail, 20)
    trail.conn.close()
    _truncate(db)
    code, out = _verify(str(site))
    assert code == 1, out
    assert "TAMPERED" in out
    assert "the head row (record 19) does not carry the audit key's HMAC" in out


def test_truncation_by_someone_holding_the_key_fails_on_the_recorders_head(
    tmp_path: Path,
) -> None:
    site, db = _site(tmp_path)
    trail = AuditTrail.open(db)
    _fill(trail, 20)
    _recorder_saw(db.parent, trail)
    trail.conn.close()
    key = load_key(db.parent / "audit.key")
    _truncate(db, forge_mac_with=key)
    assert AuditTrail.open(db).verify().ok  # the database alone is consistent again
    code, out = _verify(str(site))
    assert code == 1, out
    assert "the trail ends at seq 19 but the recorder saw head 20" in out
    assert "record 20 was deleted" in out


def test_an_unkeyed_trail_verifies_as_before_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "legacy" / "audit.sqlite"
    db.parent.mkdir()
    trail = AuditTrail(sqlite3.connect(db, isolation_level=None))  # an earlier version's trail
    _fill(trail, 20)
    trail.conn.close()
    code, out = _verify(str(db))
    assert code == 0, out
    assert "ok: 20 records, chain intact" in out
    assert "unkeyed" in out
    # the old weakness, shown: truncated with its head rewritten, the file alone still verifies
    _truncate(db)
    code, out = _verify(str(db))
    assert code == 0, out
    assert "ok: 19 records, chain intact" in out


def test_an_unkeyed_trail_truncated_is_caught_by_the_recorders_head(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = state / "audit.sqlite"
    trail = AuditTrail(sqlite3.connect(db, isolation_level=None))
    _fill(trail, 20)
    _recorder_saw(state, trail)
    trail.conn.close()
    _truncate(db)
    code, out = _verify(str(db))
    assert code == 1, out
    assert "the trail ends at seq 19 but the recorder saw head 20" in out


def test_an_unkeyed_trail_is_keyed_from_its_next_record(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    old = AuditTrail(sqlite3.connect(db, isolation_level=None))
    _fill(old, 5)
    old.conn.close()
    trail = AuditTrail.open(db)  # the service of this version opens it: the key is made
    _fill(trail, 3, start=5)
    result = trail.verify()
    assert result.ok, result.problem
    assert result.scheme.keyed_from == 6
    assert "records 1-5 predate the key" in result.scheme.describe()
    trail.conn.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET reason = 'edited' WHERE seq = 2")  # in the unkeyed part
    conn.close()
    result = AuditTrail.open(db).verify()
    assert not result.ok
    assert "record 2: content does not match its hash" in result.problem


def test_an_edited_keyed_record_is_found_and_a_rehash_without_the_key_too(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(db)
    _fill(trail, 5)
    trail.conn.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET new_value = '9.9' WHERE seq = 3")
    conn.close()
    result = AuditTrail.open(db).verify()
    assert not result.ok
    assert "record 3: content does not match its HMAC" in result.problem


def test_an_unkeyed_copy_in_place_of_a_keyed_trail_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(db)
    _fill(trail, 4)
    trail.conn.close()
    db.unlink()
    forged = AuditTrail(sqlite3.connect(db, isolation_level=None))  # rebuilt without the key
    _fill(forged, 3)
    forged.conn.close()
    code, out = _verify(str(db))
    assert code == 1, out
    assert "not keyed although an audit key exists" in out


def test_key_problems_are_refused_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(db)
    _fill(trail, 2)
    trail.conn.close()
    key_file = tmp_path / "audit.key"
    key_file.chmod(0o644)
    code, out = _verify(str(db))
    assert code == 2, out
    assert "mode 0644 lets other users read or change the audit key" in out
    assert "chmod 600" in out
    with pytest.raises(AuditKeyError, match="mode 0644"):
        AuditTrail.open(db)
    key_file.chmod(0o600)
    other = tmp_path / "other.key"
    AuditTrail.open(tmp_path / "other.sqlite", other).conn.close()
    code, out = _verify(str(db), "--key-file", str(other))
    assert code == 1, out
    assert "is not the trail's key" in out
    with pytest.raises(AuditKeyError, match="not the key the audit trail was keyed with"):
        AuditTrail.open(db, other)
    key_file.rename(tmp_path / "moved.key")
    with pytest.raises(AuditKeyError, match="its key file is missing"):
        AuditTrail.open(db)  # a keyed trail never gets a new key
    code, out = _verify(str(db))
    assert code == 2, out
    assert "is keyed" in out
    assert "--key-file" in out


def test_on_behalf_records_both_users(tmp_path: Path) -> None:
    trail = AuditTrail.open(tmp_path / "audit.sqlite")
    record = trail.on_behalf("ada").append(T0, "erik", "engineer", "note", "ws1/run")
    same = trail.on_behalf("ada").append(T0, "ada", "admin", "note", "ws1/run")
    assert (record.user, same.user) == ("ada as erik", "ada")
    assert trail.verify().ok


def test_check_heads_names_deleted_and_rewritten_records(tmp_path: Path) -> None:
    trail = AuditTrail.open(tmp_path / "audit.sqlite")
    _fill(trail, 4)
    records = trail.records()
    assert check_heads(records, [SeenHead(4, records[3].hash), SeenHead(2, records[1].hash)]) == ""
    gone = check_heads(records[:3], [SeenHead(4, records[3].hash, "spool x")])
    assert gone.startswith("the trail ends at seq 3 but the recorder saw head 4")
    assert "(spool x)" in gone
    rewritten = check_heads(records, [SeenHead(2, "f" * 64)])
    assert rewritten.startswith("record 2 is not the one the recorder saw as head 2")


def test_read_audit_heads_of_an_old_spool_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "old.spool.sqlite"
    sqlite3.connect(path).close()
    assert read_audit_heads(path) == []
