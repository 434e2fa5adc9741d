"""The running service (``hypoxia run``): reactors, their runs, the control socket.

Files under the site's ``state_dir``: ``journal.sqlite`` (runs, checkpoints, events, outages)
and ``audit.sqlite`` (the hash-chained audit trail). The control socket (a Unix socket, so file
permissions decide who may talk to it) carries one JSON object per line each way: operator
commands (:mod:`controller.service.commands`) and ``{"verb": "status"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import grp
import json
import logging
import os
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from common.config_errors import ConfigError, validate_model
from controller.core.recipe import Recipe
from controller.core.recipe_engine import Event
from controller.service.audit import AuditTrail
from controller.service.broker_access import embedded_broker
from controller.service.calibration import (
    Calibrations,
    CalibrationWatch,
    calibrate_readers,
    calibration_path,
    calibrations_due,
    load_calibrations,
)
from controller.service.clock import CycleClock, ScaledClock
from controller.service.commands import CommandProcessor, CommandResult
from controller.service.commit_group import GroupCommitter
from controller.service.journal import RunJournal, RunRecord
from controller.service.mqtt_link import MqttLink
from controller.service.overview import reactor_overview
from controller.service.peers import Identity, decide, identify, peer_of
from controller.service.recipe_source import RecipeSource
from controller.service.runner import ReactorRunner
from controller.service.site import SiteConfig
from controller.service.startup import NotReady, check_ready, gas_problems
from controller.service.timing import spread_phases
from drivers.catalog import RoleSet, Transports, open_devices
from telemetry.credentials import as_account
from telemetry.topics import Topics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Service:
    """Everything one ``hypoxia run`` process holds."""

    site: SiteConfig
    journal: RunJournal
    audit: AuditTrail
    clock: CycleClock
    transports: Transports
    runners: dict[str, ReactorRunner] = field(default_factory=dict)
    initial_events: dict[str, list[Event]] = field(default_factory=dict)
    processor: CommandProcessor | None = None
    schedule: Literal["spread", "queued"] = "spread"
    """``spread``: each reactor cycles at its own phase of the period and the journal commits in
    groups off the event loop (controller/service/timing.py, commit_group.py); ``queued``: every
    reactor at the same instant, each committing on the event loop (the scheduling before issue
    15, kept for benchmarks: bench/reactors.py)."""


def open_state(site: SiteConfig) -> tuple[RunJournal, AuditTrail]:
    """The site's journal and audit trail (created if missing)."""
    site.state_dir.mkdir(parents=True, exist_ok=True)
    return (
        RunJournal.open(site.state_dir / "journal.sqlite"),
        AuditTrail.open(site.state_dir / "audit.sqlite", site.audit_key_path),
    )


def resume_clock(journal: RunJournal, reactor_ids: list[str], speed: float) -> ScaledClock:
    """A scaled clock that continues the simulated timeline of an active run, if any."""
    for rid in reactor_ids:
        run = journal.active_run(rid)
        ckpt = journal.checkpoint(run.run_id) if run else None
        if ckpt is not None and "wall_utc" in ckpt.controller:
            wall = datetime.fromisoformat(ckpt.controller["wall_utc"])
            return ScaledClock.resume(speed, ckpt.utc, wall)
    return ScaledClock(speed)


def _plan_runs(
    journal: RunJournal, reactor_ids: list[str], recipe: RecipeSource | None
) -> list[tuple[str, tuple[RunRecord, Recipe] | None]]:
    """Per reactor: the active run to resume (with its recipe as run), or None to start one."""
    plans: list[tuple[str, tuple[RunRecord, Recipe] | None]] = []
    for rid in reactor_ids:
        active = journal.active_run(rid)
        if active is not None:
            if recipe is not None and recipe.sha256 != active.recipe_sha256:
                raise ConfigError(
                    "RECIPE",
                    "",
                    f"reactor {rid} has an unfinished run {active.run_id} of "
                    f"'{active.recipe_name}', not of '{recipe.recipe.name}'; refused. Resume it "
                    "with `hypoxia run SITE` (no recipe), end it with `hypoxia ctl stop SITE "
                    f"--reactor {rid} --run {active.run_id} --user NAME --reason TEXT` (or "
                    "`ctl abort`), then start the new recipe",
                )
            text = active.recipe_toml
            plans.append(
                (rid, (active, validate_model(active.run_id, tomllib.loads(text), Recipe)))
            )
        elif recipe is None:
            raise ConfigError(
                "RECIPE",
                "",
                f"reactor {rid} has no active run to resume; give a recipe to start one",
            )
        else:
            plans.append((rid, None))
    return plans


def _calibrate(
    site: SiteConfig,
    rid: str,
    roles: RoleSet,
    calibrations: Calibrations,
    audit: AuditTrail,
    utc: datetime,
) -> None:
    """Correct the reactor's calibrated sensors; say and audit each calibration that is due."""
    for role in calibrate_readers(roles, calibrations, rid):
        log.info("reactor %s: %s readings corrected by its calibration", rid, role)
    if site.calibration_interval_days is None:
        return
    due = calibrations_due(
        calibrations, rid, sorted(roles.readers), utc, site.calibration_interval_days
    )
    for role, why in due.items():
        log.warning("reactor %s: %s calibration due: %s", rid, role, why)
        audit.append(utc, "system", "service", "calibration_due", f"{rid}/{role}", None, why)


async def build_service(
    site: SiteConfig,
    reactor_ids: list[str],
    recipe: RecipeSource | None,
    *,
    speed: float = 1.0,
    clock: CycleClock | None = None,
    notify: Callable[[], None] | None = None,
    open_wait_s: float = 10.0,
    force: bool = False,
    ready_patience_s: float = 5.0,
) -> Service:
    """Open devices, then start or resume a run on every selected reactor.

    A new run starts only when every instrument its recipe needs reads good
    (:mod:`controller.service.startup`); ``force`` starts it anyway and audits that. A resumed run
    starts with its outputs safe until its readings are trusted.

    Raises:
        ConfigError: A recipe conflicts with an active run, no run can be started, the recipe
            is not feasible on a reactor, or its instruments are not ready (each device named
            with its cause). Nothing has moved when this is raised.
    """
    if speed != 1.0 and not site.simulated:
        raise ConfigError(
            "--speed",
            "",
            f"{speed:g}: site '{site.site}' has real instruments (simulated = false); "
            "accelerated time would date real data in the future (allowed: 1, or a site file "
            "with simulated = true whose instruments are all served by hypoxia simulate-devices)",
        )
    journal, audit = open_state(site)
    plans = _plan_runs(journal, reactor_ids, recipe)
    clock = clock or resume_clock(journal, reactor_ids, speed)
    calibrations = load_calibrations(calibration_path(site.state_dir))  # hypoxia calibrate
    transports = Transports.create(site.buses, site.lines, clock)
    service = Service(site, journal, audit, clock, transports)
    await transports.open(wait_s=open_wait_s)  # each transport logs its own cause
    opened: dict[str, RoleSet] = {}
    not_ready: dict[str, list[NotReady]] = {}
    for rid, plan in plans:
        cfg = site.reactor(rid)
        roles = opened[rid] = open_devices(cfg.devices, transports, clock)
        _calibrate(site, rid, roles, calibrations, audit, clock.utc())
        for device in roles.devices.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(device.start(), timeout=2.0)
        wrong_gas = await gas_problems(roles)
        if plan is None:
            assert recipe is not None  # noqa: S101 - checked above
            problems = await check_ready(cfg, roles, recipe.recipe, ready_patience_s)
            if problems or wrong_gas:
                not_ready[rid] = problems + wrong_gas
        for problem in wrong_gas if plan is not None else []:  # a resumed run: said, audited
            log.error("reactor %s: %s", rid, problem)
            audit.append(clock.utc(), "system", "service", "gas_check", rid, None, str(problem))
    if not_ready and not force:
        await transports.close()
        journal.close()
        raise _not_ready_error(not_ready)
    for rid, plan in plans:
        cfg = site.reactor(rid)
        root = site.broker.root
        runner = ReactorRunner(
            cfg, opened[rid], journal, audit, clock, Topics(root, site.site), notify
        )
        runner.cylinders = [c for c in site.page.cylinders if c.reactor == rid]
        runner.calibration = CalibrationWatch(
            calibrations, rid, sorted(opened[rid].readers), site.calibration_interval_days
        )
        if plan is None:
            assert recipe is not None  # noqa: S101 - checked above
            run_id = runner.start(recipe.recipe, recipe.text, recipe.sha256)
            if rid in not_ready:
                runner.audit.append(
                    clock.utc(),
                    "system",
                    "service",
                    "run_start_forced",
                    rid,
                    None,
                    {"run_id": run_id, "not_ready": [str(p) for p in not_ready[rid]]},
                    "started with --force although instruments were not ready",
                )
        else:
            active, old_recipe = plan
            service.initial_events[rid] = runner.resume(active, old_recipe)
        service.runners[rid] = runner
    service.processor = CommandProcessor(site, service.runners, audit, clock)
    return service


def _not_ready_error(not_ready: dict[str, list[NotReady]]) -> ConfigError:
    lines = [f"reactor {rid}: {p}" for rid, problems in not_ready.items() for p in problems]
    return ConfigError(
        "START",
        "",
        "instruments the recipe needs are not ready; nothing was started:\n  "
        + "\n  ".join(lines)
        + "\n(fix them, or start anyway with --force, which is audited)",
    )


async def run_service(
    service: Service,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
    before_broker_stop: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, str]:
    """Cycle every reactor until its run ends (or ``stop`` is set).

    Serves the control socket, and the MQTT link (starting the embedded broker first when the site
    file asks for it). After the runs end, the outbox is drained to the broker before returning.
    """
    server = await _serve_socket(service)
    broker = service.site.broker
    embedded = embedded_broker(service.site) if broker.embedded else None
    if embedded is not None:
        await embedded.start()
    assert service.processor is not None  # noqa: S101 - set by build_service
    link = MqttLink(
        as_account(broker, service.site.state_dir, "controller"),
        Topics(broker.root, service.site.site),
        service.journal,
        service.runners,
        service.processor,
        service.clock,
        journal_config=service.site.journal,
        partition=service.site.partition,
    )
    for runner in service.runners.values():
        runner.notify = link.notify
    committer: GroupCommitter | None = None  # "spread": cycles and PUBACKs in shared rounds
    if service.schedule == "spread":
        committer = GroupCommitter(service.site.state_dir / "journal.sqlite")
        await committer.open()
        link.commits = committer
    link_stop = asyncio.Event()
    link_task = asyncio.create_task(link.run(link_stop), name="mqtt")
    try:
        statuses = await _run_reactors(service, stop, on_ready, committer)
        await _drain(link, service.journal)
        if before_broker_stop is not None:
            await before_broker_stop()  # e.g. an in-process recorder catching up
    finally:
        link_stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(link_task, timeout=10.0)
        if committer is not None:
            link.commits = None
            await committer.close()
        if embedded is not None:
            await embedded.stop()
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            service.site.socket_path.unlink()
        await service.transports.close()
    return statuses


async def _run_reactors(
    service: Service,
    stop: asyncio.Event | None,
    on_ready: Callable[[], None] | None,
    committer: GroupCommitter | None = None,
) -> dict[str, str]:
    """Run every reactor's cycle and watchdog until all runs end or ``stop`` is set.

    With ``service.schedule == "spread"`` each reactor cycles at its own phase of the period and
    commits through ``committer``; ``queued``: all at the same instant, each on its own.
    """
    phases = dict.fromkeys(service.runners, 0.0)
    if service.schedule == "spread":
        phases = spread_phases(
            {
                rid: [
                    str(getattr(d, "bus", None) or getattr(d, "line", "")) for d in r.config.devices
                ]
                for rid, r in service.runners.items()
            }
        )
    for r in service.runners.values():
        r.commits = committer
    try:
        return await _cycle_all(service, stop, on_ready, phases)
    finally:
        for r in service.runners.values():
            r.commits = None


async def _cycle_all(
    service: Service,
    stop: asyncio.Event | None,
    on_ready: Callable[[], None] | None,
    phases: dict[str, float],
) -> dict[str, str]:
    """The reactors' cycle tasks (each at its phase) and watchdogs, until done or stopped."""
    # what start-up built (site, drivers, runners, the page's history buffers) lives as long as
    # the service: frozen out of the collector, a full collection no longer walks it (at
    # hundreds of reactors those collections paused the loop for 100-200 ms)
    gc.collect()
    gc.freeze()
    start_s = service.clock.monotonic()
    tasks = {
        rid: asyncio.create_task(
            r.run_forever(service.initial_events.get(rid), start_s + phases[rid] * r.period_s),
            name=f"reactor-{rid}",
        )
        for rid, r in service.runners.items()
    }
    dogs = [
        asyncio.create_task(r.watchdog(max(5.0, 5 * r.period_s))) for r in service.runners.values()
    ]
    if on_ready is not None:
        on_ready()
    waiters: set[asyncio.Future[Any]] = set(tasks.values())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if stopper is not None:
        waiters.add(stopper)
    while any(not t.done() for t in tasks.values()):
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if stopper is not None and stopper in done:
            break
        waiters -= done
    statuses: dict[str, str] = {}
    for rid, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is None:
            statuses[rid] = task.result()
        else:
            task.cancel()
            statuses[rid] = "interrupted"
    for helper in [*dogs, *([stopper] if stopper else [])]:
        helper.cancel()
    await asyncio.gather(*tasks.values(), *dogs, return_exceptions=True)
    return statuses


async def _drain(link: MqttLink, journal: RunJournal, timeout_s: float = 10.0) -> None:
    """Give the MQTT link a moment to publish what the last cycles left in the outbox.

    What is still unpublished after ``timeout_s`` (broker away) stays in the outbox and goes out
    when the service next starts.
    """
    if not journal.unpublished(1):
        return
    link.notify()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(link.idle.wait(), timeout=timeout_s)


async def _serve_socket(service: Service) -> asyncio.Server:
    path = service.site.socket_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    service_uid = os.geteuid()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the kernel says who connected (SO_PEERCRED); the caller cannot choose it
        peer = peer_of(writer.get_extra_info("socket"))
        identity = identify(service.site, peer, service_uid)
        try:
            while line := await reader.readline():
                reply = _answer(service, line, identity)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path), limit=64 * 1024)
    # private to the service's OS user, or open to one group; either way each caller is the site
    # user its uid is mapped to (controller/service/peers.py, docs/site.md)
    group = service.site.control_socket_group
    if group is None:
        path.chmod(0o600)
        return server
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        server.close()
        raise ConfigError(
            "site file", "control_socket_group", f"no OS group '{group}' on this host"
        ) from None
    os.chown(path, -1, gid)
    path.chmod(0o660)
    return server


def _answer(service: Service, line: bytes, identity: Identity | None = None) -> dict[str, Any]:
    """Answer one control-socket request from a caller (default: the service's own OS user)."""
    assert service.processor is not None  # noqa: S101 - set by build_service
    data: dict[str, Any] | None = None
    with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        parsed = json.loads(line)
        data = parsed if isinstance(parsed, dict) else None
    identity = identity or Identity("service", None)
    decision = decide(identity, data)
    if decision.refused:  # audited like any refused command, with the caller's uid
        fields = data or {}
        user = str(fields.get("user", "?"))[:64]
        verb = str(fields.get("verb", "?"))[:64]
        known = service.site.user(user)
        target = f"{str(fields.get('reactor', '?'))[:64]}/{str(fields.get('run_id', '?'))[:64]}"
        record = service.audit.append(
            service.clock.utc(),
            user,
            known.role if known else "unknown",
            verb,
            target,
            None,
            {"source": identity.source},
            str(fields.get("reason", ""))[:1000],
            f"refused: {decision.refused}",
        )
        return CommandResult(False, verb, f"refused: {decision.refused}", record.seq).as_dict()
    request = decision.data
    if request is not None and request.get("verb") == "status":
        return {
            "ok": True,
            "verb": "status",
            "reactors": status(service),
            "transports": transport_states(service),
        }
    processor = service.processor
    if decision.authenticated_user is not None or decision.acting_for is not None:
        processor = copy.copy(processor)  # this caller's view: who it is, how it is recorded
        processor.authenticated_user = decision.authenticated_user
        if decision.acting_for is not None:
            processor.audit = service.audit.on_behalf(decision.acting_for)
    raw = line.strip() if request is data else json.dumps(request).encode()
    return processor.handle(raw, source=identity.source).as_dict()


def transport_states(service: Service) -> dict[str, str]:
    """Every bus and line: open, or why not (the start-up cause kept by the transport)."""
    return {label: s.describe() for label, s in service.transports.states().items()}


def status(service: Service) -> dict[str, Any]:
    """Run, phase, readings, outputs, alarms and harvests of every reactor."""
    out: dict[str, Any] = {}
    for rid, r in service.runners.items():
        snap = r.snapshot
        out[rid] = {
            "run_id": r.run.run_id if r.run else None,
            "t_s": snap.run_t_s,
            "phase": snap.phase,
            "phase_state": snap.phase_state,
            "exposure_s": snap.exposure_s,
            "readings": snap.readings,
            "actuation": snap.actuation,
            "harvests": snap.harvests,
            "pending_harvests": sorted(r.engine.pending) if r.engine else [],
            "gas_supply": r.supply,  # per gas: used, needed to finish, when a cylinder runs out
            # exposure reached while the phase is held: released (late) at the restart
            "waiting_harvests": sorted(r.engine.waiting) if r.engine else [],
            "alarms": {
                n: a
                for n, a in r.alarms.snapshot().items()
                if a["state"] not in ("normal", "suppressed")
            },
            "overview": reactor_overview(r),  # for people: set points, bands, harvest clocks
        }
    return out
