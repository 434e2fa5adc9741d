"""The running service (``hypoxia run``): reactors, their runs, the control socket.

Files under the site's ``state_dir``: ``journal.sqlite`` (runs, checkpoints, events, outages)
and ``audit.sqlite`` (the hash-chained audit trail). The control socket (a Unix socket, so file
permissions decide who may talk to it) carries one JSON object per line each way: operator
commands (:mod:`controller.service.commands`) and ``{"verb": "status"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.config_errors import ConfigError, validate_model
from controller.core.recipe import Recipe
from controller.core.recipe_engine import Event
from controller.service.audit import AuditTrail
from controller.service.broker_access import embedded_broker
from controller.service.clock import CycleClock, ScaledClock
from controller.service.commands import CommandProcessor
from controller.service.journal import RunJournal
from controller.service.mqtt_link import MqttLink
from controller.service.recipe_source import RecipeSource
from controller.service.runner import ReactorRunner
from controller.service.site import SiteConfig
from drivers.catalog import Transports, open_devices
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


def open_state(site: SiteConfig) -> tuple[RunJournal, AuditTrail]:
    """The site's journal and audit trail (created if missing)."""
    site.state_dir.mkdir(parents=True, exist_ok=True)
    return (
        RunJournal.open(site.state_dir / "journal.sqlite"),
        AuditTrail.open(site.state_dir / "audit.sqlite"),
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


async def build_service(
    site: SiteConfig,
    reactor_ids: list[str],
    recipe: RecipeSource | None,
    *,
    speed: float = 1.0,
    clock: CycleClock | None = None,
    notify: Callable[[], None] | None = None,
    open_wait_s: float = 10.0,
) -> Service:
    """Open devices, then start or resume a run on every selected reactor.

    Raises:
        ConfigError: A recipe conflicts with an active run, no run can be started, or the recipe
            is not feasible on a reactor. Nothing has moved when this is raised.
    """
    journal, audit = open_state(site)
    plans: list[tuple[str, Any]] = []
    for rid in reactor_ids:
        active = journal.active_run(rid)
        if active is not None:
            if recipe is not None and recipe.sha256 != active.recipe_sha256:
                raise ConfigError(
                    "RECIPE",
                    "",
                    f"reactor {rid} has an active run {active.run_id} of "
                    f"'{active.recipe_name}'; stop it first, or start without a recipe to resume",
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
    clock = clock or resume_clock(journal, reactor_ids, speed)
    transports = Transports.create(site.buses, site.lines, clock)
    service = Service(site, journal, audit, clock, transports)
    failed = await transports.open(wait_s=open_wait_s)
    for name in failed:
        log.warning("could not open %s yet; its devices read bad until it answers", name)
    for rid, plan in plans:
        cfg = site.reactor(rid)
        roles = open_devices(cfg.devices, transports, clock)
        for device in roles.devices.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(device.start(), timeout=2.0)
        root = site.broker.root
        runner = ReactorRunner(cfg, roles, journal, audit, clock, Topics(root, site.site), notify)
        if plan is None:
            assert recipe is not None  # noqa: S101 - checked above
            runner.start(recipe.recipe, recipe.text, recipe.sha256)
        else:
            active, old_recipe = plan
            service.initial_events[rid] = runner.resume(active, old_recipe)
        service.runners[rid] = runner
    service.processor = CommandProcessor(site, service.runners, audit, clock)
    return service


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
    )
    for runner in service.runners.values():
        runner.notify = link.notify
    link_stop = asyncio.Event()
    link_task = asyncio.create_task(link.run(link_stop), name="mqtt")
    try:
        statuses = await _run_reactors(service, stop, on_ready)
        await _drain(link, service.journal)
        if before_broker_stop is not None:
            await before_broker_stop()  # e.g. an in-process recorder catching up
    finally:
        link_stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(link_task, timeout=10.0)
        if embedded is not None:
            await embedded.stop()
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            service.site.socket_path.unlink()
        await service.transports.close()
    return statuses


async def _run_reactors(
    service: Service, stop: asyncio.Event | None, on_ready: Callable[[], None] | None
) -> dict[str, str]:
    """Run every reactor's cycle and watchdog until all runs end or ``stop`` is set."""
    tasks = {
        rid: asyncio.create_task(
            r.run_forever(service.initial_events.get(rid)), name=f"reactor-{rid}"
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

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = _answer(service, line)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path), limit=64 * 1024)
    # only the service's own user may command through the socket (the user name in a command
    # is what the caller says; MQTT, where the broker authenticates, is the multi-user path)
    path.chmod(0o600)
    return server


def _answer(service: Service, line: bytes) -> dict[str, Any]:
    with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        data = json.loads(line)
        if isinstance(data, dict) and data.get("verb") == "status":
            return {"ok": True, "verb": "status", "reactors": status(service)}
    assert service.processor is not None  # noqa: S101 - set by build_service
    return service.processor.handle(line.strip(), source="ctl").as_dict()


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
            "alarms": {
                n: a
                for n, a in r.alarms.snapshot().items()
                if a["state"] not in ("normal", "suppressed")
            },
        }
    return out
