"""The running part of ``hypoxia demo``: the service with its page, progress, and the ending."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from controller.service.app import build_service, run_service
from controller.service.recipe_source import RecipeSource
from controller.service.site import load_site
from hypoxia.demo import (
    DEMO_USERS,
    PROGRESS_EVERY_S,
    SPEED,
    AutoConfirm,
    DemoFiles,
    progress_line,
    start_simulators,
    wait_served,
)
from operator_web.serve import operator_services
from recorder.gaps import SeqState
from recorder.service import Recorder


async def _progress(runner: Any, console: Console, started: float) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        console.print(progress_line(runner, started), highlight=False)


async def _control(service: Any, stop: asyncio.Event) -> dict[str, str]:
    """The service and the in-process recorder (SQLite), as ``hypoxia run`` on embedded defaults."""
    recorder = Recorder(service.site, reactors=list(service.runners))
    recorder_stop = asyncio.Event()
    recording = asyncio.create_task(recorder.run(recorder_stop), name="recorder")

    async def caught_up() -> None:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            states: dict[str, SeqState] = recorder.spool.load_states()
            if all(
                rid in states and states[rid].contiguous >= service.journal.next_seq(rid) - 1
                for rid in service.runners
            ):
                return
            await asyncio.sleep(0.1)

    try:
        return await run_service(service, stop, before_broker_stop=caught_up)
    finally:
        recorder_stop.set()
        await recording


async def serve_until_done(
    service: Any,
    console: Console,
    stop: asyncio.Event,
    files: DemoFiles,
    exit_when_done: bool,
) -> int:
    """Run the demo's service with its page until the run ends; then say where things are.

    Without ``exit_when_done`` the page is served on until Ctrl-C.
    """
    runner = service.runners["ws1"]
    run_id = runner.run.run_id if runner.run else "?"
    runner.listeners.append(AutoConfirm(service.processor))
    async with operator_services(service) as ops:
        if ops.url:
            console.print(f"\n[bold]Operator page:[/] {ops.url}", highlight=False)
            for name, role in DEMO_USERS.items():
                console.print(
                    f"  log in as [bold]{name}[/] ({role}), password "
                    f"[bold]{files.passwords[name]}[/]",
                    highlight=False,
                )
            console.print(
                "  (passwords made for this demo and shown only now; "
                f"their hashes are in {files.root / 'state' / 'users.passwd'})",
                highlight=False,
            )
        else:
            console.print(f"[yellow]operator page not served:[/] {ops.error}")
        console.print(
            f"\nRunning {runner.recipe.name if runner.recipe else '?'} (run {run_id}).\n"
            f"Compressed time base: 1 protocol hour = 1 minute of in-spec exposure; the purge "
            f"and reoxygenation are real physics. Simulated time runs {SPEED:g}x faster than "
            f"the wall clock, control every {runner.period_s:g} s (simulated), over the "
            "instruments' wire protocols. CM-24h is confirmed automatically by 'demo-auto' "
            "(marked 'demo mode' in the audit trail) unless you confirm it on the page first; "
            "CM-48h is pumped. Logs: "
            f"{files.log}\n",
            highlight=False,
        )
        started = time.monotonic()
        progress = asyncio.create_task(_progress(runner, console, started))
        try:
            statuses = await _control(service, stop)
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        console.print(progress_line(runner, started), highlight=False)
        console.print(
            f"\nRun {run_id}: {statuses.get('ws1', '?')} after {time.monotonic() - started:.0f} s",
            highlight=False,
        )
        code = await finish(service.site, files, console, statuses, run_id)
        if not exit_when_done and not stop.is_set() and ops.url:
            console.print(
                f"\nThe page stays at {ops.url} (the run's final state); Ctrl-C ends the demo.",
                highlight=False,
            )
            await stop.wait()
        return code


async def finish(
    site: Any,
    files: DemoFiles,
    console: Console,
    statuses: dict[str, str],
    run_id: str,
) -> int:
    """Write the run's batch record and say where everything is."""
    state = files.root / "state"
    console.print("\n[bold]Where the run's data and records are[/]", highlight=False)
    console.print(f"  run journal (runs, events, every cycle): {state / 'journal.sqlite'}")
    console.print(f"  audit trail (hypoxia audit verify):       {state / 'audit.sqlite'}")
    console.print(f"  recorded telemetry (SQLite store):        {state / 'telemetry.sqlite'}")
    target = files.root / "records" / run_id
    try:
        paths = await asyncio.wait_for(asyncio.to_thread(_record, site, run_id, target), 60.0)
    except Exception as exc:  # the record is a convenience: the data above is complete
        console.print(
            f"  batch record: not written ({exc!r}); "
            f"make it with: hypoxia report {run_id} --site {files.site}",
            highlight=False,
        )
    else:
        for kind, path in paths.items():
            console.print(f"  batch record ({kind}): {path}", highlight=False)
    console.print(f"  site file of the demo: {files.site}", highlight=False)
    return 0 if statuses.get("ws1") == "complete" else 1


def _record(site: Any, run_id: str, target: Path) -> dict[str, Path]:
    from records.make import report  # noqa: PLC0415 - the batch records are optional here

    _, paths = report(site, run_id, target)
    return paths


async def run_demo(files: DemoFiles, console: Console, *, exit_when_done: bool) -> int:
    """Run the demo; return the exit status."""
    site = load_site(files.site)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sims = await start_simulators(files)
    try:
        await wait_served(site, sims, timeout_s=60.0)
        recipe = RecipeSource.from_file(files.recipe)
        service = await build_service(site, ["ws1"], recipe, speed=SPEED)
        return await serve_until_done(service, console, stop, files, exit_when_done)
    finally:
        if sims.returncode is None:
            sims.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(sims.wait(), timeout=10.0)
            except TimeoutError:
                sims.kill()
                await sims.wait()
