"""``hypoxia identify``: identify a chamber on its own instruments (docs/commissioning.md).

Runs the test of :mod:`controller.service.identify` (refused while the service or a run holds the
reactor), fits it with :mod:`controller.engineering.identification`, and writes beside each other
in ``--out``: ``<reactor>-vessel.toml`` (a vessel file, :mod:`simulators.vessel`),
``<reactor>-tuning.toml`` (gains from the relay autotune on a twin of that vessel),
``<reactor>-fit.png`` (fit against data) and ``<reactor>-record.csv`` (the raw record). Both the
start and the outcome are in the audit trail.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.config_errors import ConfigError
from controller.engineering.autotune import LOOP_NAMES
from controller.engineering.identification import (
    ChamberFit,
    IdentificationError,
    IdentificationRecord,
    fit_chamber,
    fit_warnings,
)
from controller.service.identify import (
    IDENTIFYING_ROLES,
    IdentifyAbortedError,
    IdentifyPlan,
    identify_refusal,
    plan_record,
    prior_of,
    run_test,
)
from controller.service.identify import Progress as TestProgress
from hypoxia.cli_common import SiteArg, acting_user, err, fail, load_site_or_exit, out

if TYPE_CHECKING:
    from controller.core.process import ProcessModel
    from controller.service.site import SiteConfig, UserConfig


def identifying_user(site: SiteConfig, name: str | None, reactor: str) -> UserConfig:
    """The site user running the test: ``name``, else the one mapped to this OS account.

    Raises:
        ConfigError: No such user, or one who may not identify this reactor.
    """
    return acting_user(site, name, reactor, IDENTIFYING_ROLES, "identify")


def _audit(site: SiteConfig, user: UserConfig, reactor: str, **entry: Any) -> None:
    from controller.service.audit import AuditTrail

    site.state_dir.mkdir(parents=True, exist_ok=True)
    audit = AuditTrail.open(site.state_dir / "audit.sqlite", site.audit_key_path)
    try:
        audit.append(datetime.now(UTC), user.name, user.role, "identify", reactor, **entry)
    finally:
        audit.conn.close()


def _fit_record(fit: ChamberFit) -> dict[str, Any]:
    values = {
        "volume_l": fit.volume_l,
        "leak_lpm": fit.leak_lpm,
        "transport_delay_s": fit.transport_delay_s,
        "o2_sensor_t63_s": fit.o2_t63_s,
    }
    if fit.co2_t63_s is not None:
        values["co2_sensor_t63_s"] = fit.co2_t63_s
    return {k: {"value": round(v.value, 6), "sd": round(v.sd, 6)} for k, v in values.items()}


def _nominal_record(process: ProcessModel) -> dict[str, float]:
    return {
        "volume_l": process.volume_l,
        "leak_lpm": process.leak_lpm,
        "transport_delay_s": process.transport_delay_s,
        "o2_sensor_t63_s": process.o2_sensor_t63_s,
        "co2_sensor_t63_s": process.co2_sensor_t63_s,
    }


async def _run_with_progress(
    site: SiteConfig, reactor: str, plan: IdentifyPlan, speed: float
) -> IdentificationRecord:
    from controller.service.clock import ScaledClock

    with Progress(
        TextColumn("[bold]{task.fields[phase]}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        expected_s = plan.expected_s(site.reactor(reactor).process)
        task = bar.add_task("identify", total=expected_s, phase="opening", detail="")
        shown = {"phase": ""}

        def show(p: TestProgress) -> None:
            if p.phase != shown["phase"]:
                shown["phase"] = p.phase
                bar.console.print(f"phase: {p.phase} at {p.elapsed_s:.0f} s", highlight=False)
            detail = f"O2 {p.o2_pct:.2f} %"
            if math.isfinite(p.co2_pct):
                detail += f"  CO2 {p.co2_pct:.2f} %"
            flows = ", ".join(f"{k.removesuffix('_lpm')} {v:g}" for k, v in p.flows.items() if v)
            detail += f"  flows: {flows or 'all closed'}  t {p.elapsed_s:.0f} s"
            total = max(expected_s, p.elapsed_s)
            bar.update(task, completed=p.elapsed_s, total=total, phase=p.phase, detail=detail)

        record = await run_test(site, reactor, plan, ScaledClock(speed), show)
        bar.update(task, completed=bar.tasks[0].total, phase="done", detail="every gas closed")
        return record


def _estimates_table(fit: ChamberFit, process: ProcessModel) -> Table:
    table = Table("parameter", "identified", "± 1 sigma", "site model", title="identified chamber")
    rows = [
        ("volume, L", fit.volume_l, process.volume_l),
        ("leak, L/min", fit.leak_lpm, process.leak_lpm),
        ("transport delay, s", fit.transport_delay_s, process.transport_delay_s),
        ("O2 sensor t63, s", fit.o2_t63_s, process.o2_sensor_t63_s),
        (
            "O2 dead time (delay + t63), s",
            fit.o2_dead_time_s,
            process.transport_delay_s + process.o2_sensor_t63_s,
        ),
    ]
    if fit.co2_t63_s is not None:
        rows.append(("CO2 sensor t63, s", fit.co2_t63_s, process.co2_sensor_t63_s))
    for name, est, nominal in rows:
        table.add_row(name, f"{est.value:.4g}", f"{est.sd:.2g}", f"{nominal:g}")
    return table


def _write_outputs(
    site: SiteConfig,
    reactor: str,
    record: IdentificationRecord,
    fit: ChamberFit,
    folder: Path,
    o2_sp_pct: float,
    loops: list[str],
) -> tuple[list[Path], str]:
    """Write the vessel file, record, plot and proposed gains; print the estimates.

    Returns:
        The files written, and why no gains were proposed ("" when they were).
    """
    from hypoxia.cli_identify_files import (
        plot_fit,
        record_csv,
        tune_identified,
        vessel_of,
        vessel_toml,
    )

    process = site.reactor(reactor).process
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ("vessel.toml", "tuning.toml", "fit.png", "record.csv")
    paths = {kind: folder / f"{reactor}-{kind}" for kind in kinds}
    for path in paths.values():  # never leave an older run's file beside this one's
        path.unlink(missing_ok=True)
    vessel = vessel_of(fit, process, name=f"{site.site}-{reactor}-identified")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    paths["vessel.toml"].write_text(vessel_toml(vessel, fit, f"{site.site}/{reactor}", stamp))
    paths["record.csv"].write_text(record_csv(record))
    plot_fit(record, fit, paths["fit.png"], title=f"{site.site}/{reactor}: identification fit")
    out.print(_estimates_table(fit, process))
    for note in fit_warnings(fit):
        err.print(f"[yellow]warning:[/] {note}", highlight=False)
    tuned = tune_identified(vessel, o2_sp_pct, loops)
    if tuned.error:
        err.print(f"[yellow]no gains proposed:[/] {tuned.error}", highlight=False)
    else:
        header = (
            f"hypoxia identify {site.site} --reactor {reactor} ({stamp})\n"
            f"relay autotune on a twin of the identified vessel at {o2_sp_pct:g} % O2"
        )
        paths["tuning.toml"].write_text(tuned.text(header))
        out.print(tuned.summary, highlight=False)
    return [p for p in paths.values() if p.exists()], tuned.error


def identify(
    site_path: SiteArg,
    reactor: Annotated[str, typer.Option(help="Reactor id.")],
    user: Annotated[
        str | None, typer.Option(help="Site user (engineer or admin); default: your OS account's.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the files (default: STATE_DIR/identify)."),
    ] = None,
    o2_floor_pct: Annotated[
        float, typer.Option("--o2-floor", help="Lowest O2 the N2 step aims for, % (2-19).")
    ] = 12.0,
    n2_lpm: Annotated[
        float | None, typer.Option("--n2", help="N2 flow of the step, L/min (default: half max).")
    ] = None,
    n2_max_s: Annotated[
        float, typer.Option("--n2-max", help="Longest N2 step, s (caps the N2 used).")
    ] = 1800.0,
    baseline_s: Annotated[float, typer.Option("--baseline", help="Closed baseline, s.")] = 60.0,
    leak_watch_s: Annotated[
        float, typer.Option("--leak-watch", help="Closed after the N2 step (the leak), s.")
    ] = 1800.0,
    co2_lpm: Annotated[
        float | None,
        typer.Option("--co2", help="CO2 step flow, L/min; 0: no CO2 step (default: 1/4 max)."),
    ] = None,
    co2_step_s: Annotated[float, typer.Option("--co2-step", help="CO2 step length, s.")] = 60.0,
    co2_watch_s: Annotated[
        float, typer.Option("--co2-watch", help="Closed after the CO2 step, s.")
    ] = 300.0,
    sample_s: Annotated[float, typer.Option("--sample", help="Reading period, s.")] = 1.0,
    o2_sp_pct: Annotated[
        float, typer.Option("--tune-o2", help="O2 operating point of the proposed gains, %.")
    ] = 1.0,
    loops: Annotated[
        str, typer.Option(help="Loops to autotune on the identified twin.")
    ] = "o2,co2",
    speed: Annotated[
        float, typer.Option(help="Time this much faster (sites with simulated = true only).")
    ] = 1.0,
) -> None:
    """Identify a chamber: closed / N2 step / leak watch / CO2 step, fit, vessel file and gains.

    Gas flows (N2 down to the O2 floor, then a small CO2 step), so the reactor must be free: the
    command refuses while the site's service runs or the reactor has an active run. Audited.
    """
    site = load_site_or_exit(site_path)
    if not 0.1 <= speed <= 10_000:
        raise fail(f"--speed: {speed:g}; allowed: 0.1 to 10000")
    if speed != 1.0 and not site.simulated:
        raise fail(
            f"--speed: {speed:g}: site '{site.site}' has real instruments (simulated = false); "
            "allowed: 1, or a site file with simulated = true"
        )
    try:
        process = site.reactor(reactor).process
    except KeyError as exc:
        raise fail(f"--reactor: {exc.args[0]}") from None
    refusal = identify_refusal(site, reactor)
    if refusal is not None:
        raise fail(refusal)
    try:
        who = identifying_user(site, user, reactor)
        plan = IdentifyPlan(
            baseline_s=baseline_s,
            o2_floor_pct=o2_floor_pct,
            n2_lpm=n2_lpm if n2_lpm is not None else 0.5 * process.n2_max_lpm,
            n2_max_s=n2_max_s,
            leak_watch_s=leak_watch_s,
            co2_lpm=co2_lpm if co2_lpm is not None else 0.25 * process.co2_max_lpm,
            co2_step_s=co2_step_s,
            co2_watch_s=co2_watch_s,
            sample_s=sample_s,
        ).checked(process)
    except ConfigError as exc:
        raise fail(exc) from None
    names = [n.strip() for n in loops.split(",") if n.strip()]
    if not names or any(n not in LOOP_NAMES for n in names):
        raise fail(f"--loops: '{loops}'; allowed: a comma list of {', '.join(LOOP_NAMES)}")
    folder = out_dir if out_dir is not None else site.state_dir / "identify"
    n2_cap_l = plan.n2_lpm * plan.n2_max_s / 60.0
    _audit(
        site,
        who,
        reactor,
        old=_nominal_record(process),
        new=plan_record(plan),
        reason=f"identification test started (N2 at most {n2_cap_l:.0f} L, O2 floor "
        f"{plan.o2_floor_pct:g} %)",
    )
    try:
        record = asyncio.run(_run_with_progress(site, reactor, plan, speed))
        fit = fit_chamber(record, prior_of(process))
    except (ConfigError, IdentifyAbortedError, IdentificationError) as exc:
        _audit(site, who, reactor, reason=f"identification aborted: {exc}", outcome="failed")
        raise fail(f"identify aborted, every gas closed: {exc}") from None
    except Exception as exc:  # a driver or transport fault: audited, then shown in full
        _audit(site, who, reactor, reason=f"identification failed: {exc!r}", outcome="failed")
        raise
    except KeyboardInterrupt:
        _audit(site, who, reactor, reason="identification interrupted", outcome="failed")
        raise
    written, tuning_error = _write_outputs(site, reactor, record, fit, folder, o2_sp_pct, names)
    _audit(
        site,
        who,
        reactor,
        old=_nominal_record(process),
        new=_fit_record(fit) | {"files": [str(p) for p in written]},
        reason="identification done: " + json.dumps({"rms_o2_pct": round(fit.o2_rms_pct, 4)}),
    )
    for path in written:
        out.print(f"written: {path}", highlight=False)
    if tuning_error:
        raise typer.Exit(1)
