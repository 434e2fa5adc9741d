"""Operator page under load: 10 reactors, each with 48 h of 1 s data in the page's history.

The service side is real (10 reactor runners of a site file, their recipe engines and alarms, the
live hub and the page served by uvicorn in this event loop); what is simulated is the cycle's
input: every second each reactor gets a new snapshot (readings with noise) and the hub is told, as
the runner does after committing a cycle. The history buffers are filled with 48 h of 1 s rows
(172 800 per reactor) before the page is opened. Headless Chromium (Debian's, driven by
Playwright) then measures:

* **first paint** of a reactor view: from navigation to the charts drawn (48 h downsampled to
  about 2000 points per series), median and worst of several loads, each in a new page;
* **live update**: from the cycle (the listener call) to the page having drawn it (values and
  charts), from the browser's own record of each update, over a minute of 1 s cycles;
* the history request alone (server side, 48 h window) and the fleet request.

Run: ``python bench/operator_page.py [--loads 7] [--seconds 60] [--no-write]``; the figures go to
docs/performance.md between the ``bench:operator-page`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import async_playwright

from common.passwords import set_password
from controller.service.app import open_state
from controller.service.clock import SteppedClock
from controller.service.commands import CommandProcessor
from controller.service.runner import ReactorRunner
from controller.service.shaping import Snapshot
from controller.service.site import load_site
from drivers.catalog import Transports, open_devices
from operator_web.history import COLUMNS
from operator_web.live import LiveHub
from operator_web.serve import PageServer
from operator_web.web import OperatorPage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scale_kit import device_tables, workstation_process  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # Debian's chromium, as the tests launch it (tests/page_kit.py)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RECIPE_2PCT = """name = "2 % O2, harvests by exposure"
[[phases]]
name = "hypoxic hold"
o2_pct = 2.0
o2_band_pct = 0.2
co2_pct = 5.0
co2_band_pct = 1.0
temp_c = 37.0
temp_band_c = 1.0
until = "exposure"
duration_h = 48.0
  [[phases.harvests]]
  name = "CM-24h"
  at_exposure_h = 24.0
  [[phases.harvests]]
  name = "CM-48h"
  at_exposure_h = 48.0
"""
REACTORS = 10
HISTORY_S = 48 * 3600
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:operator-page:begin -->", "<!-- bench:operator-page:end -->"
PASSWORD = "bench-pw-1"  # noqa: S105 - a throw-away user of a temporary site


SENSORS = (
    'map.points = [{ name = "o2", kind = "input", address = 0, dtype = "float32", unit = "%" }, '
    '{ name = "co2", kind = "input", address = 2, dtype = "float32", unit = "%" }, '
    '{ name = "temp", kind = "input", address = 4, dtype = "float32", unit = "degC" }]\n'
    'roles = { o2 = "o2", co2 = "co2", temperature = "temp" }\n'
)


def _site(tmp: Path) -> Path:
    """Ten reactors, each on a Modbus TCP bus that is never opened (the bench feeds the hub)."""
    parts = [
        f'site = "bench"\nstate_dir = "{tmp / "state"}"\n',
        *(
            f'[buses.plant{i}]\nkind = "tcp"\nhost = "127.0.0.1"\nport = 9\n'
            "timeout_s = 0.05\nretries = 0\n"
            for i in range(REACTORS)
        ),
    ]
    for i in range(REACTORS):
        rid = f"ws{i + 1:02d}"
        devices = [
            (f"{rid}-sensors", "register_map", SENSORS),
            *(
                (f"{rid}-{role}", "alicat_modbus", f'role = "{role}"\nfull_scale_lpm = 20.0')
                for role in ("n2_mixer", "air_mixer", "co2_mixer")
            ),
        ]
        parts.append(
            f'[[reactors]]\nid = "{rid}"\nname = "Workstation {i + 1}"\n'
            f"{workstation_process(air_max_lpm=10.0)}{device_tables(f'plant{i}', 1, devices)}"
        )
    parts.append('[[users]]\nname = "erik"\nrole = "engineer"\n[page]\nport = 0\n')
    path = tmp / "bench-site.toml"
    path.write_text("\n".join(parts))
    return path


def _fill(runner: ReactorRunner, hub: LiveHub, now_utc: datetime, rng: random.Random) -> None:
    """48 h of 1 s rows in the reactor's history buffer."""
    live = hub.reactors[runner.config.id]
    n = HISTORY_S
    t0 = now_utc.timestamp() - n
    t = t0 + np.arange(n, dtype=np.float64)
    data = np.full((len(COLUMNS), n), np.nan, dtype=np.float32)
    col = {name: k for k, name in enumerate(COLUMNS)}
    noise = np.random.default_rng(rng.randrange(1 << 30))
    data[col["o2"]] = 2.0 + 0.03 * noise.standard_normal(n)
    data[col["o2"], :900] = np.linspace(20.9, 2.0, 900)
    data[col["o2_sp"]] = 2.0
    data[col["o2_band"]] = 0.2
    data[col["co2"]] = 5.0 + 0.02 * noise.standard_normal(n)
    data[col["co2_sp"]] = 5.0
    data[col["co2_band"]] = 1.0
    data[col["temp"]] = 37.0 + 0.02 * noise.standard_normal(n)
    data[col["temp_sp"]] = 37.0
    data[col["temp_band"]] = 1.0
    data[col["n2_lpm"]] = 0.9 + 0.05 * noise.standard_normal(n)
    data[col["co2_lpm"]] = 0.05
    data[col["air_lpm"]] = 0.0
    data[col["o2_lpm"]] = 0.0
    live.history.load(t, data)


def _cycle(runner: ReactorRunner, hub: LiveHub, clock: SteppedClock, rng: random.Random) -> None:
    """What a committed cycle leaves: a new snapshot, then the listener call."""

    def reading(value: float) -> dict[str, Any]:
        return {"value": value, "unit": "%", "quality": "simulated", "reason": ""}

    snap = runner.snapshot
    runner.snapshot = Snapshot(
        run_t_s=snap.run_t_s + 1.0,
        utc=clock.utc().isoformat(),
        phase="hypoxic hold",
        phase_state="running",
        readings={
            "o2": reading(2.0 + rng.gauss(0, 0.03)),
            "co2": reading(5.0 + rng.gauss(0, 0.02)),
            "temperature": {**reading(37.0 + rng.gauss(0, 0.02)), "unit": "degC"},
        },
        actuation={
            "n2_lpm": 0.9,
            "air_lpm": 0.0,
            "o2_lpm": 0.0,
            "co2_lpm": 0.05,
            "heater_w": 130.0,
            "pump_on": False,
        },
        exposure_s=snap.exposure_s + 1.0,
        harvests=[],
    )
    hub.on_cycle(runner, [])


async def _browse(
    base: str, loads: int, seconds: int, cycle_wall: dict[float, float]
) -> tuple[list[float], list[float], dict[str, float]]:
    """First paints, live-update lags and API times, measured in headless Chromium."""
    paints: list[float] = []
    lags: list[float] = []
    api: dict[str, float] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1440, "height": 1000})
        login = await context.new_page()
        await login.goto(f"{base}/login")
        await login.fill("#user", "erik")
        await login.fill("#password", PASSWORD)
        await login.click("button[type=submit]")
        await login.wait_for_selector(".tile")
        for name, url in (
            ("history", "/api/reactor/ws05/history?points=2000"),
            ("fleet", "/api/fleet"),
            ("reactor", "/api/reactor/ws05"),
        ):
            times = []
            for _ in range(5):
                t = time.perf_counter()
                reply = await login.request.get(base + url)
                await reply.body()
                times.append(time.perf_counter() - t)
            api[name] = statistics.median(times)
        for _ in range(loads):
            tab = await context.new_page()
            await tab.goto(f"{base}/reactor/ws05")
            await tab.wait_for_selector("body[data-painted='1']", timeout=30_000)
            paints.append(float(await tab.evaluate("Number(document.body.dataset.paintedMs)")))
            await tab.close()
        tab = await context.new_page()
        await tab.goto(f"{base}/reactor/ws05")
        await tab.wait_for_selector("body[data-painted='1']")
        await asyncio.sleep(seconds)
        for t_s, wall_ms in await tab.evaluate("Page.updates"):
            if t_s in cycle_wall:
                lags.append(wall_ms - cycle_wall[t_s])
        await browser.close()
    return paints, lags, api


async def main(loads: int, seconds: int, write: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-page-"))
    site = load_site(_site(tmp))
    set_password(site.users_file, "erik", PASSWORD)
    now = datetime.now(UTC).replace(microsecond=0)
    clock = SteppedClock(now - timedelta(seconds=60))
    journal, audit = open_state(site)
    transports = Transports.create(site.buses, site.lines, clock)
    recipe_path = tmp / "recipe.toml"
    recipe_path.write_text(RECIPE_2PCT)
    from controller.service.recipe_source import RecipeSource  # noqa: PLC0415

    recipe = RecipeSource.from_file(recipe_path)
    runners: dict[str, ReactorRunner] = {}
    for cfg in site.reactors:
        roles = open_devices(cfg.devices, transports, clock)
        runner = ReactorRunner(cfg, roles, journal, audit, clock)
        runner.start(recipe.recipe, recipe.text, recipe.sha256)
        runners[cfg.id] = runner
    clock.advance(60.0)
    hub = LiveHub(runners, [], None)
    hub.attach()
    rng = random.Random(1)
    started = time.perf_counter()
    for runner in runners.values():
        _fill(runner, hub, now, rng)
    fill_s = time.perf_counter() - started
    page = OperatorPage(site, hub, CommandProcessor(site, runners, audit, clock))
    server = PageServer.bind(page.app("bench-secret"), "127.0.0.1", 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    stop = asyncio.Event()
    cycle_wall: dict[float, float] = {}

    async def cycles() -> None:
        while not stop.is_set():
            clock.advance(1.0)
            # the cycle of ws05 is "committed" when its listener is called: stamp it just before
            cycle_wall[runners["ws05"].snapshot.run_t_s + 1.0] = time.time() * 1000.0
            for runner in runners.values():
                _cycle(runner, hub, clock, rng)
            await asyncio.sleep(1.0)

    ticking = asyncio.create_task(cycles())
    try:
        paints, lags, api = await _browse(base, loads, seconds, cycle_wall)
    finally:
        stop.set()
        await ticking
        await server.stop()
        hub.detach()
    result = {
        "reactors": REACTORS,
        "rows_per_reactor": HISTORY_S,
        "fill_s": fill_s,
        "paint_median_ms": statistics.median(paints),
        "paint_max_ms": max(paints),
        "loads": len(paints),
        "live_median_ms": statistics.median(lags) if lags else math.nan,
        "live_p95_ms": sorted(lags)[int(0.95 * (len(lags) - 1))] if lags else math.nan,
        "live_max_ms": max(lags) if lags else math.nan,
        "updates": len(lags),
        "api_ms": {k: 1000 * v for k, v in api.items()},
    }
    _print(result)
    if write:
        _write(result)
    return result


def _table(r: dict[str, Any]) -> str:
    api = r["api_ms"]
    return "\n".join(
        [
            BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} on this 2-core machine by "
            "`python bench/operator_page.py`: "
            f"{r['reactors']} reactors, {r['rows_per_reactor']:,} rows of 1 s data each (48 h), "
            "page served by uvicorn in the service's event loop while every reactor cycles "
            "once a second; headless Debian Chromium.",
            "",
            "| what | median | worst | target |",
            "|---|---|---|---|",
            f"| first paint of a reactor view (navigation to charts drawn, {r['loads']} loads) "
            f"| {r['paint_median_ms']:.0f} ms | {r['paint_max_ms']:.0f} ms | < 2000 ms |",
            f"| live update: cycle to page drawn ({r['updates']} updates; p95 "
            f"{r['live_p95_ms']:.0f} ms) | {r['live_median_ms']:.0f} ms "
            f"| {r['live_max_ms']:.0f} ms | < 1000 ms |",
            "| `GET /api/reactor/ID/history` (48 h to ~2000 points) "
            f"| {api['history']:.0f} ms | | |",
            f"| `GET /api/fleet` (10 tiles) | {api['fleet']:.0f} ms | | |",
            "| `GET /api/reactor/ID` (overview, log, gas forecast) "
            f"| {api['reactor']:.0f} ms | | |",
            "",
            f"Filling the ten 48 h buffers took {r['fill_s']:.1f} s (numpy, in memory: "
            "about 10 MB per reactor).",
            END,
        ]
    )


def _print(r: dict[str, Any]) -> None:
    print(_table(r))


def _write(r: dict[str, Any]) -> None:
    text = DOC.read_text()
    block = _table(r)
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = (
            text.rstrip()
            + "\n\n## The operator page: 10 reactors, 48 h of 1 s data (issue 10)\n\n"
            + block
            + "\n"
        )
    DOC.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.loads, args.seconds, not args.no_write))
