"""One zip per run (record, data, recipe, site file, audit records, checksums) and its check.

The zip holds the record (HTML + PDF), the data export, the recipe and site files, the run's audit
records and a manifest of SHA-256 checksums.

``manifest.json`` lists every other member with its size and SHA-256, and the audit chain's head
(seq, hash) when the archive was made; ``manifest.sha256`` holds the SHA-256 of ``manifest.json``.
:func:`verify_archive` fails, naming the member, when a member is changed, missing or unlisted,
and (given the live trail) when the archived audit records disagree with it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.service.audit import AuditRecord, AuditTrail

FORMAT = "hypoxia-batch-archive/1"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
AUDIT = "audit.json"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def audit_json(records: list[AuditRecord]) -> bytes:
    """The audit records as JSON (every field, hashes included), one record per line."""
    lines = [json.dumps(_audit_dict(r), sort_keys=True, ensure_ascii=False) for r in records]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def _audit_dict(record: AuditRecord) -> dict[str, Any]:
    return {**record.body(), "prev_hash": record.prev_hash, "hash": record.hash}


def write_archive(
    path: Path,
    members: Mapping[str, bytes],
    *,
    run_id: str,
    site: str,
    audit_head: tuple[int, str] | None,
) -> Path:
    """Write the zip: ``members`` (name -> bytes), then the manifest and its checksum."""
    manifest = {
        "format": FORMAT,
        "run_id": run_id,
        "site": site,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "audit_head": {"seq": audit_head[0], "hash": audit_head[1]} if audit_head else None,
        "members": [
            {"name": name, "bytes": len(data), "sha256": sha256(data)}
            for name, data in sorted(members.items())
        ],
    }
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(name, data)
        zf.writestr(MANIFEST, text)
        zf.writestr(MANIFEST_SUM, f"{sha256(text)}  {MANIFEST}\n")
    partial.replace(path)
    return path


@dataclass(slots=True)
class Verdict:
    """The outcome of checking an archive: problems found (none: it passes)."""

    path: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def _read(zf: zipfile.ZipFile, name: str) -> bytes:
    """A member's bytes; ``KeyError`` if absent, ``ValueError`` if unreadable (corrupt)."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        msg = f"member {name} is corrupt: {exc}"
        raise ValueError(msg) from None


def verify_archive(path: Path, live: AuditTrail | None = None) -> Verdict:
    """Check every member against the manifest (and the audit records against ``live``)."""
    verdict = Verdict(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        verdict.problems.append(f"{path}: not a readable zip archive: {exc}")
        return verdict
    with zf:
        names = set(zf.namelist())
        manifest = _manifest(zf, names, verdict)
        if manifest is None:
            return verdict
        verdict.manifest = manifest
        listed = {m["name"]: m for m in manifest.get("members", [])}
        for name, entry in sorted(listed.items()):
            if name not in names:
                verdict.problems.append(f"member {name} is missing")
                continue
            try:
                data = _read(zf, name)
            except ValueError as exc:
                verdict.problems.append(str(exc))
                continue
            verdict.checked += 1
            if sha256(data) != entry["sha256"] or len(data) != entry["bytes"]:
                verdict.problems.append(
                    f"member {name} was changed: SHA-256 {sha256(data)[:16]}…, "
                    f"the manifest says {entry['sha256'][:16]}…"
                )
        for name in sorted(names - set(listed) - {MANIFEST, MANIFEST_SUM}):
            verdict.problems.append(f"member {name} is not in the manifest (added)")
        if live is not None and AUDIT in listed and AUDIT in names:
            _against_live(zf, manifest, live, verdict)
    return verdict


def _manifest(zf: zipfile.ZipFile, names: set[str], verdict: Verdict) -> dict[str, Any] | None:
    for needed in (MANIFEST, MANIFEST_SUM):
        if needed not in names:
            verdict.problems.append(f"member {needed} is missing")
            return None
    try:
        text, checksum = _read(zf, MANIFEST), _read(zf, MANIFEST_SUM)
    except ValueError as exc:
        verdict.problems.append(str(exc))
        return None
    expected = checksum.decode(errors="replace").split()[:1]
    if [sha256(text)] != expected:
        verdict.problems.append(
            f"{MANIFEST_SUM} does not match {MANIFEST}: member {MANIFEST} or member "
            f"{MANIFEST_SUM} was changed"
        )
        return None
    try:
        manifest: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        verdict.problems.append(f"member {MANIFEST} is not JSON: {exc}")
        return None
    if manifest.get("format") != FORMAT:
        verdict.problems.append(f"member {MANIFEST}: format is not {FORMAT}")
        return None
    return manifest


def _against_live(
    zf: zipfile.ZipFile, manifest: dict[str, Any], live: AuditTrail, verdict: Verdict
) -> None:
    """The archived audit records are the live trail's, and the live chain still holds."""
    try:
        archived: list[dict[str, Any]] = json.loads(_read(zf, AUDIT))
    except (ValueError, json.JSONDecodeError) as exc:
        verdict.problems.append(f"member {AUDIT}: unreadable: {exc}")
        return
    result = live.verify()
    if not result.ok:
        verdict.problems.append(f"the live audit trail does not verify: {result.problem}")
    by_seq = {r.seq: _audit_dict(r) for r in live.records()}
    for rec in archived:
        seq = rec.get("seq")
        mine = by_seq.get(seq) if isinstance(seq, int) else None
        if mine is None:
            verdict.problems.append(f"member {AUDIT}: record {seq} is not in the live trail")
        elif mine != rec:
            diff = sorted(k for k in set(mine) | set(rec) if mine.get(k) != rec.get(k))
            verdict.problems.append(
                f"member {AUDIT}: record {seq} differs from the live trail ({', '.join(diff)})"
            )
    head = manifest.get("audit_head")
    if head:
        mine = by_seq.get(head["seq"])
        if mine is None or mine["hash"] != head["hash"]:
            verdict.problems.append(
                f"member {MANIFEST}: the audit head at archive time (seq {head['seq']}) "
                "is not in the live trail"
            )
