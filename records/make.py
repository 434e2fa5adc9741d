"""What the ``hypoxia report / runs / export / archive`` commands do, without the CLI.

Each function opens the site's journal and audit trail read-only and the recorder's store, so a
running service is never disturbed, and raises :class:`~records.state.RecordError` (one line) for
bad input: an unknown run or harvest, a missing journal or store.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.service.site import SiteConfig
from records import archive, export, pdf
from records.gather import gather, recipe_of
from records.model import BatchRecord
from records.render import render_html
from records.state import RecordError, SiteState
from records.store import StoreReader, open_reader


@dataclass(slots=True)
class Opened:
    """A site's state and store, opened read-only."""

    state: SiteState
    reader: StoreReader


@contextmanager
def opened(site: SiteConfig) -> Iterator[Opened]:
    """Open the site's journal, audit trail and store; close them after."""
    state = SiteState.open(site)
    try:
        yield Opened(state, open_reader(site.recorder.store, site.state_dir))
    finally:
        state.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "harvest"


def write_record(rec: BatchRecord, out_dir: Path, *, with_pdf: bool = True) -> dict[str, Path]:
    """Write ``record.html`` (``record-<harvest>.html`` for one harvest) and its PDF."""
    stem = f"record-{_safe(rec.selected_harvest)}" if rec.selected_harvest else "record"
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"{stem}.html"
    html.write_text(render_html(rec), encoding="utf-8")
    paths = {"html": html}
    if with_pdf:
        paths["pdf"] = pdf.print_pdf(html, out_dir / f"{stem}.pdf")
    return paths


def report(
    site: SiteConfig, run_id: str, out_dir: Path, harvest: str | None = None
) -> tuple[BatchRecord, dict[str, Path]]:
    """Gather and write the record of a run (HTML, then PDF)."""
    with opened(site) as o:
        rec = gather(o.state, o.reader, run_id, harvest)
    return rec, write_record(rec, out_dir)


def runs(
    site: SiteConfig, reactor: str | None = None, since: datetime | None = None
) -> list[dict[str, Any]]:
    """The site's runs with their harvests and outages, oldest first (journal only)."""
    state = SiteState.open(site)
    try:
        out = []
        for row in state.journal.run_rows():
            started = datetime.fromisoformat(row["started_utc"])
            if reactor is not None and row["reactor"] != reactor:
                continue
            if since is not None and started < since:
                continue
            counts = state.journal.event_counts(row["run_id"])
            outages = state.journal.outages(row["run_id"])
            out.append(
                {
                    **row,
                    "harvests_due": counts.get("harvest_due", 0),
                    "harvests_done": counts.get("harvest_done", 0),
                    "harvests_planned": _planned_harvests(state, row["run_id"]),
                    "outages": len(outages),
                    "outage_s": sum((b - a).total_seconds() for a, b in outages),
                }
            )
        return out
    finally:
        state.close()


def _planned_harvests(state: SiteState, run_id: str) -> int:
    try:
        recipe = recipe_of(state.run(run_id))
    except RecordError:
        return 0
    return sum(len(p.harvests) for p in recipe.phases)


def export_run(site: SiteConfig, run_id: str, out_dir: Path, fmt: export.Format) -> dict[str, Path]:
    """Write the run's telemetry and events as CSV or Parquet."""
    with opened(site) as o:
        o.state.run(run_id)
        points = o.reader.points("telemetry", run_id)
        events = o.state.journal.events(run_id)
    return export.write_export(points, events, out_dir, fmt)


def archive_run(
    site_path: Path, site: SiteConfig, run_id: str, out_dir: Path, fmt: export.Format = "csv"
) -> tuple[Path, BatchRecord]:
    """Write ``<run_id>.zip``: record (HTML + PDF), data, recipe and site files, audit, manifest."""
    with opened(site) as o:
        rec = gather(o.state, o.reader, run_id)
        points = o.reader.points("telemetry", run_id)
        run = o.state.run(run_id)
        audit_records = o.state.audit_of_run(run)
    staging = out_dir / f".{run_id}.staging"
    try:
        record_files = write_record(rec, staging)
        data = export.write_export(points, rec.events, staging / "data", fmt)
        members = {
            "record.html": record_files["html"].read_bytes(),
            "record.pdf": record_files["pdf"].read_bytes(),
            f"data/telemetry.{fmt}": data["telemetry"].read_bytes(),
            f"data/events.{fmt}": data["events"].read_bytes(),
            "recipe.toml": rec.recipe_toml.encode(),
            f"site/{site_path.name}": site_path.read_bytes(),
            archive.AUDIT: archive.audit_json(audit_records),
        }
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    target = archive.write_archive(
        out_dir / f"{run_id}.zip", members, run_id=run_id, site=site.site, audit_head=rec.audit_head
    )
    return target, rec
