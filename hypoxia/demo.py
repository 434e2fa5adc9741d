"""``hypoxia demo``: the whole system on embedded defaults, in one command (docs/operator.md).

Simulated instruments speak their wire protocols (``hypoxia simulate-devices`` in a child process,
on the second core), the controller runs the 2 % O2 / 48 h protocol on a compressed time base
(1 protocol hour = 1 minute of exposure, :file:`demo_files/recipe.toml`) at 60x accelerated time
with a 5 s control period, the embedded broker carries telemetry to the recorder (SQLite), and the
operator page is served from the controller. The CM-24h harvest is confirmed automatically by the
site user ``demo-auto`` (its audit record says "demo mode"), CM-48h by the harvest pump.

Why not the real time base: a 48 h protocol at 1 s cycles would need 170 000 cycles over the wire
in under three minutes, about 1000 per second; this machine carries about 40 (measured, see
docs/operator.md). Compressing the protocol's hours to minutes and controlling every 5 s keeps the
physics (the purge, the reoxygenation) real and needs 12 cycles a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from common.passwords import set_password
from controller.core.recipe_engine import Event
from controller.service.overview import reactor_overview
from controller.service.runner import ReactorRunner
from operator_web.texts import duration

SPEED = 60.0
"""Simulated seconds per wall second."""
DEMO_USERS = {"erik": "engineer", "olga": "operator"}
"""Demo logins (passwords generated at each start, printed once)."""
AUTO_CONFIRM_AFTER_S = 180.0
"""A due operator harvest is confirmed by ``demo-auto`` this long (simulated) after it falls due."""
PROGRESS_EVERY_S = 5.0
"""Wall seconds between two progress lines."""
FILES = resources.files("hypoxia") / "demo_files"


@dataclass(frozen=True, slots=True)
class DemoFiles:
    """Where one demo keeps everything."""

    root: Path
    site: Path
    recipe: Path
    vessel: Path
    log: Path
    passwords: dict[str, str]


def _free_port(preferred: int = 0) -> int:
    """``preferred`` if it is free on loopback, else any free port."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def prepare(root: Path, page_port: int) -> DemoFiles:
    """Write the demo's site, recipe and vessel, and its users' passwords, into ``root``.

    A previous demo's state in ``root`` is replaced: every demo starts a new run.
    """
    root = root.resolve()
    for old in ("state", "dev", "records"):
        shutil.rmtree(root / old, ignore_errors=True)
    (root / "dev").mkdir(parents=True, exist_ok=True)
    values = {
        "state": str(root / "state"),
        "dev": str(root / "dev"),
        "broker_port": _free_port(),
        "page_port": _free_port(page_port),
        **{name: _free_port() for name in ("p_gw", "p_tcp", "p_co2", "p_mfc")},
    }
    site = root / "site.toml"
    site.write_text(Template((FILES / "site.toml").read_text()).substitute(values))
    recipe, vessel = root / "recipe.toml", root / "vessel.toml"
    recipe.write_text((FILES / "recipe.toml").read_text())
    vessel.write_text((FILES / "vessel.toml").read_text())
    passwords = {name: secrets.token_urlsafe(9) for name in DEMO_USERS}
    for name, password in passwords.items():
        set_password(root / "state" / "users.passwd", name, password)
    return DemoFiles(root, site, recipe, vessel, root / "demo.log", passwords)


class AutoConfirm:
    """Confirms due operator harvests on behalf of ``demo-auto`` (demo mode only)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.waiting: dict[str, float] = {}

    def __call__(self, runner: ReactorRunner, events: list[Event]) -> None:
        """The runner's listener: note due harvests, confirm them a little later."""
        for ev in events:
            if ev.kind == "harvest_due" and ev.detail.get("action") == "confirm":
                self.waiting[str(ev.detail["name"])] = ev.t_s + AUTO_CONFIRM_AFTER_S
        run = runner.run
        engine = runner.engine
        if run is None or engine is None:
            return
        for name, at_s in list(self.waiting.items()):
            if name not in engine.pending:
                del self.waiting[name]  # an operator confirmed it on the page
            elif runner.snapshot.run_t_s >= at_s:
                del self.waiting[name]
                self.processor.handle(
                    {
                        "verb": "confirm_harvest",
                        "reactor": runner.config.id,
                        "run_id": run.run_id,
                        "user": "demo-auto",
                        "harvest": name,
                        "volume_ml": 50.0,
                        "container": f"DEMO-{name}",
                        "reason": "demo mode: confirmed automatically, no operator involved",
                    },
                    source="demo",
                )


def progress_line(runner: ReactorRunner, started: float) -> str:
    """One line of where the demo run stands."""
    view = reactor_overview(runner)
    v = view["values"]
    phase = view["phase"]
    wall = time.monotonic() - started
    parts = [f"{int(wall // 60)}:{int(wall % 60):02d}", f"{phase.get('name') or phase['state']}"]
    o2 = v["o2"]
    if o2["value"] is not None:
        sp = f" (set {o2['sp']:.1f})" if o2["sp"] is not None else ""
        parts.append(f"O2 {o2['value']:.2f} %{sp}")
    if v["temp"]["value"] is not None:
        parts.append(f"{v['temp']['value']:.1f} °C")
    done = [h["name"] for h in view["harvests"] if h["state"] == "done"]
    if done:
        parts.append(f"collected: {', '.join(done)}")
    h = view["next_harvest"]
    if h is not None and h["state"] == "counting":
        parts.append(
            f"{h['name']}: {duration(h['exposure_s'])} of {duration(h['target_s'])} in band"
        )
    elif h is not None:
        parts.append(f"{h['name']} DUE")
    return "  ".join(parts)


def quiet_logging(log_file: Path, verbose: bool) -> None:
    """Library and broker logs to ``log_file``; to the terminal only with ``verbose``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(fmt)
    root.addHandler(to_file)
    if verbose:
        to_term = logging.StreamHandler(sys.stderr)
        to_term.setFormatter(fmt)
        root.addHandler(to_term)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


async def start_simulators(files: DemoFiles) -> asyncio.subprocess.Process:
    """``hypoxia simulate-devices`` for the demo site, its output to the demo's log folder."""
    out = (files.root / "simulators.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hypoxia",
        "simulate-devices",
        str(files.site),
        "--vessel",
        str(files.vessel),
        "--speed",
        f"{SPEED:g}",
        stdout=out,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out.close()
    return proc


async def wait_served(site: Any, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Until every bus and line of the site answers a connection (or the simulators died)."""
    deadline = time.monotonic() + timeout_s
    endpoints: list[tuple[str, int]] = []
    paths: list[Path] = []
    for settings in [*site.buses.values(), *site.lines.values()]:
        port = str(getattr(settings, "port", ""))
        host = getattr(settings, "host", None)
        if host is not None:
            endpoints.append((host, int(settings.port)))
        elif port.startswith("socket://"):
            h, _, p = port.removeprefix("socket://").rpartition(":")
            endpoints.append((h, int(p)))
        else:
            paths.append(Path(port))
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("the instrument simulators stopped (see simulators.log)")
        ready = all(p.exists() for p in paths)
        for host, number in endpoints if ready else []:
            try:
                _, writer = await asyncio.open_connection(host, number)
            except OSError:
                ready = False
                break
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if ready:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the instrument simulators did not answer within {timeout_s:.0f} s")
