"""Test kit for the control service: the example site on free loopback ports, every instrument
simulated over its real wire protocol, the service and the plant on one stepped clock."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.core.recipe_engine import Event
from controller.service.app import Service, build_service
from controller.service.clock import CycleClock, SteppedClock
from controller.service.recipe_source import RecipeSource
from controller.service.runner import ReactorRunner
from controller.service.site import SiteConfig, load_site
from simulators.site_sim import SiteSim, serve_site
from simulators.vessel import load_vessel

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

HOLD_5 = """name = "5 % hold"
[[phases]]
name = "hold"
o2_pct = 5.0
o2_band_pct = 0.3
co2_pct = 5.0
co2_band_pct = 1.0
temp_c = 37.0
duration_h = 5.0
"""


def air_hold(name: str, duration_h: float, co2_pct: float = 5.0) -> str:
    """A recipe ``name`` of one phase, "air": room air (20.5 % O2) and ``co2_pct`` CO2 for
    ``duration_h``."""
    return f"""name = "{name}"
[[phases]]
name = "air"
o2_pct = 20.5
o2_band_pct = 1.0
co2_pct = {co2_pct}
co2_band_pct = 1.0
until = "time"
duration_h = {duration_h}
"""


SECONDARY_O2 = """
[lines.o2b-uart]
reply_timeout_s = 0.1
port = "socket://127.0.0.1:{port}"
baudrate = 9600
eol = "\\r\\n"
"""
SECONDARY_O2_DEVICE = """
[[reactors.devices]]
name = "o2-luminox-b"
driver = "luminox"
line = "o2b-uart"
role = "o2_secondary"
"""


_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, never handed out before in this process.

    Chosen below the kernel's ephemeral range (32768-60999 on Linux), so an outgoing connection
    of another test cannot take it as its local port between this check and the server's bind.
    """
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 32_000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    msg = "no free port in 20000-32000"
    raise RuntimeError(msg)


def site_file(
    tmp: Path,
    limits: dict[str, float] | None = None,
    secondary_o2: bool = False,
    broker: str | None = None,
    production_timeouts: bool = False,
) -> Path:
    """The example simulated site rewritten for this test: free ports, private paths.

    ``broker`` is a ``[broker]`` table body; by default an embedded broker on a free port.
    """
    text = (ROOT / "examples/sites/sim.toml").read_text()
    for port in ("15020", "15021", "15031", "15032"):
        text = text.replace(port, str(free_port()))
    text = text.replace("/tmp/hypoxia-sim/state", str(tmp / "state"))  # noqa: S108 - replaced
    text = text.replace("/tmp/hypoxia-sim", str(tmp / "dev"))  # noqa: S108 - replaced
    if not production_timeouts:  # loopback answers in ms: short timeouts keep fault tests quick
        text = re.sub(r"^(?:timeout_s|retries|reply_timeout_s) = [^\n]*\n", "", text, flags=re.M)
        text = re.sub(
            r"^(\[buses\.[^\]]+\][^\n]*\n)",
            r"\1timeout_s = 0.05\nretries = 0\n",
            text,
            flags=re.MULTILINE,
        )
        text = re.sub(
            r"^(\[lines\.[^\]]+\][^\n]*\n)",
            r"\1reply_timeout_s = 0.1\n",
            text,
            flags=re.MULTILINE,
        )
    if limits:
        body = "\n".join(f"{k} = {v}" for k, v in limits.items())
        text = re.sub(
            r"\[reactors\.limits\]\n(?:[a-z_0-9]+ = [^\n]+\n)+",
            f"[reactors.limits]\n{body}\n",
            text,
        )
    if secondary_o2:
        text = text.replace(
            "# ---- the reactor", SECONDARY_O2.format(port=free_port()) + "\n# ---- the reactor"
        )
        text = text.replace("# ---- users", SECONDARY_O2_DEVICE + "\n# ---- users")
    broker_body = broker if broker is not None else f"embedded = true\nport = {free_port()}"
    text = text.replace("# ---- buses", f"[broker]\n{broker_body}\n\n# ---- buses", 1)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "site.toml"
    path.write_text(text)
    return path


def recipe_file(tmp: Path, body: str, name: str = "recipe.toml") -> Path:
    """Write a recipe for the test."""
    path = tmp / name
    path.write_text(body)
    return path


@dataclass
class Stack:
    """A running site: simulators, service and their shared clock."""

    clock: Any
    sim: SiteSim
    service: Service
    site: SiteConfig

    @property
    def runner(self) -> ReactorRunner:
        """The one reactor's runner."""
        return self.service.runners["ws1"]

    @property
    def link(self) -> Any:
        """The plant behind the instruments."""
        return self.sim.links["ws1"]

    async def cycles(self, n: int) -> list[Event]:
        """Run ``n`` control cycles (commands applied between cycles, as in the service)."""
        runner = self.runner
        seen: list[Event] = []
        for _ in range(n):
            self.clock.advance(runner.period_s)
            pending: list[Event] = []
            while not runner.commands.empty():
                pending += runner.apply_command(runner.commands.get_nowait())
            status = await runner.cycle(pending)
            seen.extend(pending)
            if status != "active":
                break
        return seen

    def alarm(self, name: str) -> str:
        """Current ISA-18.2 state of an alarm."""
        return self.runner.alarms.alarms[name].state.value

    def journal_events(self, kind: str) -> list[dict[str, Any]]:
        """Journaled events of the active run of a kind."""
        run = self.runner.run
        assert run is not None
        return self.service.journal.events(run.run_id, kind)


@asynccontextmanager
async def stack(
    tmp: Path,
    recipe_body: str,
    *,
    limits: dict[str, float] | None = None,
    secondary_o2: bool = False,
    vessel: str = "workstation-100l",
    site_path: Path | None = None,
    clock: CycleClock | None = None,
) -> AsyncIterator[Stack]:
    """Serve the site's instruments and start the service with the recipe (or resume)."""
    path = site_path or site_file(tmp, limits, secondary_o2)
    site = load_site(path)
    clock = clock or SteppedClock(T0)
    sim = await serve_site(site, load_vessel(vessel), clock, seed=1)
    recipe = RecipeSource.from_file(recipe_file(tmp, recipe_body)) if recipe_body else None
    service = await build_service(site, ["ws1"], recipe, clock=clock, open_wait_s=5.0)
    try:
        yield Stack(clock, sim, service, site)
    finally:
        await service.transports.close()
        service.journal.close()
        await sim.close()
