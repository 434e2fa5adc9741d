"""``hypoxia run``, ``hypoxia ctl`` and ``hypoxia audit verify``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from common.config_errors import ConfigError
from hypoxia.cli_common import SiteArg, err, fail, load_site_or_exit, out

if TYPE_CHECKING:
    from controller.service.audit import SeenHead

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")


class Schedule(StrEnum):
    """When the reactors' cycles run (controller/service/timing.py)."""

    SPREAD = "spread"
    QUEUED = "queued"


ctl_app = typer.Typer(
    no_args_is_help=True, help="Command a running service (hold, restart, set points, alarms, ...)."
)


def run(
    site_path: SiteArg,
    recipe_path: Annotated[
        Path | None,
        typer.Argument(metavar="[RECIPE]", help="Recipe to start; omit to resume the active run."),
    ] = None,
    reactor: Annotated[list[str] | None, typer.Option(help="Reactor id (default: all).")] = None,
    speed: Annotated[
        float,
        typer.Option(help="Run time this much faster (sites with simulated = true only)."),
    ] = 1.0,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Start although instruments the recipe needs are not ready (audited)."
        ),
    ] = False,
    schedule: Annotated[
        Schedule,
        typer.Option(
            help="spread: each reactor at its own phase of the period, journal group commit; "
            "queued: every reactor at the same instant (the old scheduling, for benchmarks)."
        ),
    ] = Schedule.SPREAD,
) -> None:
    """Run RECIPE on the reactors of SITE (or resume their active runs) until the runs end."""
    from controller.service.app import build_service
    from controller.service.recipe_source import RecipeSource
    from operator_web.serve import operator_services

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    site = load_site_or_exit(site_path)
    ids = reactor or [r.id for r in site.reactors]
    try:
        for rid in ids:
            site.reactor(rid)
        recipe = RecipeSource.from_file(recipe_path) if recipe_path else None
    except KeyError as exc:
        raise fail(f"--reactor: {exc.args[0]}") from None
    except ConfigError as exc:
        raise fail(exc) from None
    from controller.service.limits import check_start

    try:  # what this machine allows (open files, the broker's port), before anything moves
        check_start(site, str(site_path))
    except ConfigError as exc:
        raise fail(exc) from None

    async def main() -> dict[str, str]:
        try:
            service = await build_service(site, ids, recipe, speed=speed, force=force)
        except ConfigError as exc:
            raise fail(exc) from None
        service.schedule = "queued" if schedule is Schedule.QUEUED else "spread"
        for rid, runner in service.runners.items():
            err.print(f"{rid}: {runner.describe()}", highlight=False)
        err.print(f"control socket: {site.socket_path}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        page = operator_services(service)  # the operator page and notifications
        ops = await page.__aenter__()
        if ops.url:
            err.print(f"operator page: {ops.url}")
        if ops.error:
            err.print(f"[yellow]warning:[/] operator page not served: {ops.error}")
        try:
            return await _control(service, site, ids, stop)
        finally:
            await page.__aexit__(None, None, None)

    statuses = asyncio.run(main())
    for rid, status in statuses.items():
        out.print(f"{rid}: {status}")


async def _control(service: Any, site: Any, ids: list[str], stop: asyncio.Event) -> dict[str, str]:
    """Run the service (with the in-process recorder when the broker is embedded)."""
    from controller.service.app import run_service
    from recorder.service import Recorder

    if not site.broker.embedded:
        return await run_service(service, stop)
    # zero-setup default: embedded broker, and the recorder in this process (SQLite store); the
    # whole site is recorded as "*" (one wildcard subscription and the site's own session, not a
    # list of every reactor id)
    every = set(ids) == {r.id for r in site.reactors}
    try:
        recorder = Recorder(site, reactors=["*"] if every else ids)
    except ConfigError as exc:
        raise fail(exc) from None
    recorder_stop = asyncio.Event()
    recording = asyncio.create_task(_record_when_broker_is_up(recorder, recorder_stop))
    err.print(f"recording to {site.recorder.store.kind} in {site.state_dir}")

    async def caught_up() -> None:
        await _wait_recorded(recorder, service, timeout_s=15.0)

    try:
        return await run_service(service, stop, before_broker_stop=caught_up)
    finally:
        recorder_stop.set()
        await recording


async def _record_when_broker_is_up(recorder: Any, stop: asyncio.Event) -> None:
    """Run the in-process recorder (it reconnects by itself while the broker starts)."""
    await recorder.run(stop)


async def _wait_recorded(recorder: Any, service: Any, timeout_s: float) -> None:
    """Wait until the recorder holds every sequence number the controller published."""
    from recorder.gaps import SeqState

    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        states: dict[str, SeqState] = recorder.spool.load_states()
        if all(
            rid in states and states[rid].contiguous >= service.journal.next_seq(rid) - 1
            for rid in service.runners
        ):
            return
        await asyncio.sleep(0.1)
    err.print("warning: the recorder has not caught up; the rest goes in on its next start")


def _send(site_path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    site = load_site_or_exit(site_path)
    path = site.socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10.0)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        err.print(f"[bold red]error:[/] no service answers on {path}: {exc}", highlight=False)
        raise typer.Exit(4) from None
    reply: dict[str, Any] = json.loads(data)
    return reply


def _command(site_path: Path, payload: dict[str, Any]) -> None:
    reply = _send(site_path, {k: v for k, v in payload.items() if v is not None})
    print(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        raise typer.Exit(1)


@ctl_app.command("status")
def ctl_status(
    site_path: SiteArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the service's JSON.")] = False,
    watch: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Refresh every SECONDS (Ctrl-C ends).")
    ] = None,
) -> None:
    """Runs, phases, values against set points, harvest clocks and alarms of the service."""
    if as_json:
        _command(site_path, {"verb": "status"})
        return
    from hypoxia.status_view import watch_status

    watch_status(lambda: _send(site_path, {"verb": "status"}), watch)


Reactor = Annotated[str, typer.Option(help="Reactor id.")]
RunId = Annotated[str, typer.Option("--run", help="Run id (see `ctl status`).")]
User = Annotated[
    str | None,
    typer.Option(
        help="The site user to act as (default: the one your OS account is mapped to; only an "
        "admin may name another)."
    ),
]
Reason = Annotated[str, typer.Option(help="Why (required for set points, stop, abort, shelve).")]


def _base(verb: str, reactor: str, run_id: str, user: str | None, reason: str) -> dict[str, Any]:
    return {"verb": verb, "reactor": reactor, "run_id": run_id, "user": user, "reason": reason}


STATE_VERBS = {
    "hold": "Hold the running phase (targets kept, no phase progress, no harvests released).",
    "restart": "Restart a held phase.",
    "stop": "Stop the run (outputs to their safe state).",
    "abort": "Abort the run at once (outputs to their safe state).",
}
"""Commands that change the run's state and take only the common options."""


def _state_command(verb: str, help_text: str) -> None:
    def command(
        site_path: SiteArg, reactor: Reactor, run_id: RunId, user: User = None, reason: Reason = ""
    ) -> None:
        _command(site_path, _base(verb, reactor, run_id, user, reason))

    command.__doc__ = help_text
    ctl_app.command(verb)(command)


for _verb, _help in STATE_VERBS.items():
    _state_command(_verb, _help)


@ctl_app.command("setpoint")
def ctl_setpoint(
    site_path: SiteArg,
    reactor: Reactor,
    run_id: RunId,
    variable: Annotated[str, typer.Option(help="o2_pct, co2_pct or temp_c.")],
    value: Annotated[float, typer.Option(help="New set point.")],
    user: User = None,
    reason: Reason = "",
) -> None:
    """Override a set point of the current phase."""
    _command(
        site_path,
        {
            **_base("set_setpoint", reactor, run_id, user, reason),
            "variable": variable,
            "value": value,
        },
    )


@ctl_app.command("ack")
def ctl_ack(
    site_path: SiteArg,
    reactor: Reactor,
    run_id: RunId,
    alarm: Annotated[str, typer.Option(help="Alarm name.")],
    user: User = None,
    reason: Reason = "",
) -> None:
    """Acknowledge an alarm."""
    _command(site_path, {**_base("acknowledge", reactor, run_id, user, reason), "alarm": alarm})


@ctl_app.command("shelve")
def ctl_shelve(
    site_path: SiteArg,
    reactor: Reactor,
    run_id: RunId,
    alarm: Annotated[str, typer.Option(help="Alarm name.")],
    minutes: Annotated[float, typer.Option(help="For how long.")],
    user: User = None,
    reason: Reason = "",
) -> None:
    """Shelve an alarm for a while."""
    _command(
        site_path,
        {**_base("shelve", reactor, run_id, user, reason), "alarm": alarm, "minutes": minutes},
    )


@ctl_app.command("harvest")
def ctl_harvest(
    site_path: SiteArg,
    reactor: Reactor,
    run_id: RunId,
    harvest: Annotated[str, typer.Option(help="Harvest name.")],
    volume_ml: Annotated[float, typer.Option(help="Collected volume, mL.")],
    container: Annotated[str, typer.Option(help="Container id.")],
    user: User = None,
    reason: Reason = "",
) -> None:
    """Confirm that a released harvest was collected."""
    _command(
        site_path,
        {
            **_base("confirm_harvest", reactor, run_id, user, reason),
            "harvest": harvest,
            "volume_ml": volume_ml,
            "container": container,
        },
    )


@ctl_app.command("note")
def ctl_note(
    site_path: SiteArg,
    reactor: Reactor,
    run_id: RunId,
    text: Annotated[str, typer.Option(help="The note.")],
    user: User = None,
) -> None:
    """Add a note to the run's record."""
    _command(site_path, {**_base("note", reactor, run_id, user, ""), "text": text})


@audit_app.command("verify")
def audit_verify(
    target: Annotated[
        Path, typer.Argument(metavar="SITE|DB", help="Site file, or an audit.sqlite file.")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="The audit key (default: the site's audit_key_file, or audit.key beside DB).",
        ),
    ] = None,
    recorder_spool: Annotated[
        list[Path] | None,
        typer.Option(
            "--recorder-spool",
            help="A recorder's spool with its copy of the audit head (repeat; default: every "
            "spool in the state directory's recorder/ folder).",
        ),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            help="The controller partition whose trail DB is (default: the site file's "
            "partition; none for a site's one trail)."
        ),
    ] = None,
) -> None:
    """Check the audit trail: its chain, its keyed head, and the head the recorder saw.

    Exit status 1 if a record was changed, added or deleted; 2 if the check cannot be made.
    """
    from controller.service.audit import AuditKeyError, AuditTrail, check_heads, load_key

    if target.suffix in (".sqlite", ".db"):
        db, key_path = target, key_file or target.parent / "audit.key"
    else:
        site = load_site_or_exit(target)
        db, key_path = site.state_dir / "audit.sqlite", key_file or site.audit_key_path
        partition = partition or site.partition
    if not db.exists():
        err.print(f"[bold red]error:[/] no audit trail at {db}", highlight=False)
        raise typer.Exit(2)
    try:
        key = load_key(key_path) if key_file is not None or key_path.exists() else None
    except AuditKeyError as exc:
        raise fail(exc) from None
    trail = AuditTrail.inspect(db, key)
    try:
        result = trail.verify()
        scheme = result.scheme
        if scheme.keyed and key is None:
            raise fail(
                f"the audit trail {db} is keyed (key id {scheme.key_id}) but there is no key at "
                f"{key_path}: give it with --key-file"
            )
        spools = (
            recorder_spool
            if recorder_spool is not None
            else sorted((db.parent / "recorder").glob("*.spool.sqlite"))
        )
        heads = _recorded_heads(spools, partition or "")
        problem = result.problem or check_heads(trail.records(), heads)
    finally:
        trail.conn.close()
    if problem:
        out.print(f"[bold red]TAMPERED:[/] {problem} ({db}, {result.count} records)")
        raise typer.Exit(1)
    out.print(f"ok: {result.count} records, chain intact ({db})")
    out.print(f"  chain: {scheme.describe()}", highlight=False)
    if heads:
        top = max(h.seq for h in heads)
        out.print(
            f"  head: matches the recorder's copy (latest seen: record {top}; "
            f"{len(heads)} head(s) from {len(spools)} spool(s))",
            highlight=False,
        )
    else:
        out.print(
            "  head: no recorder's copy found (give one with --recorder-spool); without it only "
            "the key shows a shortened trail",
            highlight=False,
        )


def _recorded_heads(spools: list[Path], trail: str = "") -> list[SeenHead]:
    """The heads of one audit trail the recorders saw (their spools opened read-only)."""
    import sqlite3
    from datetime import UTC, datetime

    from controller.service.audit import SeenHead
    from recorder.spool import read_audit_heads

    heads: list[SeenHead] = []
    for spool in spools:
        try:
            seen = read_audit_heads(spool, trail)
        except sqlite3.Error as exc:
            raise fail(f"--recorder-spool {spool}: {exc}") from None
        for h in seen:
            when = datetime.fromtimestamp(h.ts_ms / 1000, UTC).isoformat(timespec="seconds")
            heads.append(SeenHead(h.seq, h.hash, f"{spool.name}: {h.reactor}'s state of {when}"))
    return heads
