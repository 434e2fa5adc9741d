"""``hypoxia report``, ``runs``, ``export`` and ``archive``: batch records for QA (docs/records.md).

Bad input (unknown run or harvest, no journal, no store) exits with status 2 and one line naming
what is wrong; ``archive verify`` exits with status 1 when an archive fails its check.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from hypoxia.cli_common import SiteArg, err, fail, load_site_or_exit, out

DEFAULT_OUT = Path("run-records")
SiteOption = Annotated[Path | None, typer.Option("--site", metavar="SITE", help="Site TOML file.")]
OutOption = Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Output folder.")]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Run id (see `hypoxia runs SITE`).")]
FormatOption = Annotated[
    Literal["csv", "parquet"], typer.Option("--format", help="File format of the data.")
]


def _site(site_path: Path | None) -> tuple[Path, Any]:
    path = site_path or (Path(os.environ["HYPOXIA_SITE"]) if "HYPOXIA_SITE" in os.environ else None)
    if path is None:
        raise fail("--site: no site file given (and HYPOXIA_SITE is not set)")
    return path, load_site_or_exit(path)


def _hm(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f} h"


def report(
    run_id: RunArg,
    site_path: SiteOption = None,
    harvest: Annotated[
        str | None, typer.Option(metavar="NAME", help="Only this harvest's record.")
    ] = None,
    out_dir: OutOption = None,
) -> None:
    """Write the batch record of RUN (running or finished) as HTML and PDF."""
    from records.make import report as make_report
    from records.state import RecordError

    _, site = _site(site_path)
    target = out_dir or DEFAULT_OUT / run_id
    try:
        rec, paths = make_report(site, run_id, target, harvest)
    except RecordError as exc:
        raise fail(str(exc)) from None
    state = "PROVISIONAL (run in progress)" if rec.provisional else rec.status
    out.print(f"{rec.run_id}: {rec.recipe.name} on {rec.reactor}, {state}", highlight=False)
    for h in rec.shown_harvests:
        if h.released:
            out.print(
                f"  {h.name}: exposure {_hm(h.exposure_s)}, mean O2 {h.o2_mean_pct:.3f} %, "
                f"dose error {h.dose_error_pct_h:.4f} %.h, {len(h.excursions)} excursion(s)",
                highlight=False,
            )
        else:
            out.print(f"  {h.name}: not yet due", highlight=False)
    for note in rec.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)


def runs(
    site_path: SiteArg,
    reactor: Annotated[str | None, typer.Option(metavar="ID", help="Only this reactor.")] = None,
    since: Annotated[
        str | None, typer.Option(metavar="DATE", help="Runs started on or after (ISO date, UTC).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the runs of SITE: recipe, reactor, start, end, state, harvests, outages."""
    from records.make import runs as list_runs
    from records.state import RecordError

    site = load_site_or_exit(site_path)
    if reactor is not None:
        try:
            site.reactor(reactor)
        except KeyError as exc:
            raise fail(f"--reactor: {exc.args[0]}") from None
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise fail(f"--since: '{since}' is not a date; allowed: YYYY-MM-DD[THH:MM]") from None
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    try:
        rows = list_runs(site, reactor, start)
    except RecordError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        "run",
        "recipe",
        "reactor",
        "started (UTC)",
        "ended (UTC)",
        "state",
        "harvests",
        "outages",
        title=f"runs of {site.site}",
    )
    for r in rows:
        table.add_row(
            r["run_id"],
            r["recipe"],
            r["reactor"],
            r["started_utc"][:19].replace("T", " "),
            (r["ended_utc"] or "-")[:19].replace("T", " "),
            r["state"],
            f"{r['harvests_due']}/{r['harvests_planned']} due, {r['harvests_done']} done",
            f"{r['outages']} ({r['outage_s']:.0f} s)" if r["outages"] else "0",
        )
    out.print(table)


def export(
    run_id: RunArg,
    site_path: SiteOption = None,
    fmt: FormatOption = "csv",
    out_dir: OutOption = None,
) -> None:
    """Write RUN's stored time series and journaled events as CSV or Parquet."""
    from records.make import export_run
    from records.state import RecordError

    _, site = _site(site_path)
    try:
        paths = export_run(site, run_id, out_dir or DEFAULT_OUT / run_id, fmt)
    except RecordError as exc:
        raise fail(str(exc)) from None
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)


def archive(
    target: Annotated[
        str, typer.Argument(metavar="RUN | verify", help="A run id, or `verify` to check FILE.")
    ],
    file: Annotated[
        Path | None, typer.Argument(metavar="[FILE]", help="The archive to verify.")
    ] = None,
    site_path: SiteOption = None,
    out_dir: OutOption = None,
    fmt: FormatOption = "csv",
) -> None:
    """Archive RUN into one zip, or check one: `archive verify FILE [--site SITE]`.

    The zip holds the record (HTML + PDF), the data, the recipe and site files, the run's audit
    records and SHA-256 checksums; --site also checks it against the live audit trail.
    """
    if target == "verify":
        _verify(file, site_path)
        return
    from records.make import archive_run
    from records.state import RecordError

    path, site = _site(site_path)
    try:
        zip_path, rec = archive_run(path, site, target, out_dir or DEFAULT_OUT, fmt)
    except RecordError as exc:
        raise fail(str(exc)) from None
    head = rec.audit_head or (0, "")
    out.print(f"archive: {zip_path}", highlight=False)
    out.print(f"audit head at archive time: seq {head[0]}, {head[1]}", highlight=False)


def _verify(file: Path | None, site_path: Path | None) -> None:
    from records.archive import verify_archive
    from records.state import ReadOnlyAudit, RecordError

    if file is None:
        raise fail("archive verify: give the archive FILE")
    if not file.is_file():
        raise fail(f"{file}: no such archive")
    live = None
    if site_path is not None:
        site = load_site_or_exit(site_path)
        try:
            live = ReadOnlyAudit.open_ro(site.state_dir / "audit.sqlite")
        except RecordError as exc:
            raise fail(str(exc)) from None
    verdict = verify_archive(file, live)
    if verdict.ok:
        against = " and the live audit trail" if live is not None else ""
        out.print(
            f"ok: {file}: {verdict.checked} members match the manifest{against}", highlight=False
        )
        return
    for problem in verdict.problems:
        out.print(f"[bold red]FAILED:[/] {file}: {problem}", highlight=False)
    raise typer.Exit(1)
