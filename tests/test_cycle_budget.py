"""The cycle's time budget holds by construction, and the watchdog does not share the loop's fate.

- the site check refuses a bus whose worst case (every transaction timing out on every try) does
  not fit the cycle deadline, naming the bus and what would fit;
- at the example site's production timeouts, with every simulated instrument silent, the cycle
  keeps its period and the watchdog never trips;
- the watchdog runs in its own thread: a blocked event loop is seen and handed to ``on_blocked``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from pathlib import Path

import pytest

from common.config_errors import ConfigError
from controller.service.budget import CYCLE_DEADLINE_SHARE, transport_loads
from controller.service.clock import ScaledClock
from controller.service.site import load_site
from controller.service.watchdog import WatchdogThread
from tests.service_kit import ROOT, site_file, stack

HOLD = """
name = "hold 5 %"
[[phases]]
name = "hold"
o2_pct = 5.0
co2_pct = 5.0
temp_c = 37.0
until = "time"
duration_h = 10.0
"""


def test_the_example_site_fits_its_cycle_deadline() -> None:
    site = load_site(ROOT / "examples/sites/sim.toml")
    devices = [(d, r.process.control_period_s) for r in site.reactors for d in r.devices]
    loads = {load.name: load for load in transport_loads(devices, site.buses, site.lines)}
    assert set(loads) == set(site.buses) | set(site.lines)
    assert all(load.fits for load in loads.values())
    assert loads["plant-tcp"].transactions == 7  # N2 MFC read + verified write, pump, heater
    assert max(load.worst_s for load in loads.values()) <= CYCLE_DEADLINE_SHARE * 1.0


def test_a_bus_that_cannot_fit_the_cycle_is_refused_at_load(tmp_path: Path) -> None:
    path = site_file(tmp_path, production_timeouts=True)
    text = path.read_text().replace("timeout_s = 0.1 ", "timeout_s = 0.3 ")
    path.write_text(text.replace("retries = 0", "retries = 1", 1))
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    message = str(caught.value)
    assert "buses.plant-tcp.timeout_s" in message
    assert "7 transactions per cycle" in message
    assert "exceeds the cycle deadline 0.80 s" in message
    assert "allowed: timeout_s x (retries + 1) <= 0.114 s" in message


async def test_silent_instruments_at_production_timeouts_keep_the_cycle_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = site_file(tmp_path, production_timeouts=True)
    async with stack(tmp_path, HOLD, site_path=path, clock=ScaledClock(1.0)) as st:
        for served in st.sim.served:
            served.sim.faults.no_reply = True  # every instrument stops answering
        runner = st.runner
        beats: list[float] = []
        cycling = asyncio.create_task(runner.run_forever())
        watching = asyncio.create_task(runner.watchdog(stall_s=5.0))
        with caplog.at_level(logging.ERROR, logger="controller.service.watchdog"):
            t0 = time.monotonic()
            while time.monotonic() - t0 < 6.0:
                if not beats or runner.heartbeat != beats[-1]:
                    beats.append(runner.heartbeat)
                await asyncio.sleep(0.05)
        cycling.cancel()
        watching.cancel()
        await asyncio.gather(cycling, watching, return_exceptions=True)
        assert not any("no cycle" in r.message for r in caplog.records)  # never tripped
        gaps = [b - a for a, b in itertools.pairwise(beats)]
        assert len(beats) >= 5, beats  # the cycle went on at its period, instruments silent
        assert max(gaps) < 2.5, gaps  # one period (1 s) plus the deadline, never a stall
        assert runner.snapshot.readings["o2"]["quality"] == "bad"


def test_the_watchdog_thread_sees_a_blocked_event_loop() -> None:
    loop = asyncio.new_event_loop()
    control = threading.Thread(target=loop.run_forever, daemon=True)
    control.start()
    blocked = threading.Event()
    swept: list[bool] = []

    async def safe_outputs() -> None:
        swept.append(True)

    dog = WatchdogThread(
        "ws-test", lambda: 1.0, safe_outputs, loop, stall_s=0.2, on_blocked=blocked.set
    )
    try:
        loop.call_soon_threadsafe(time.sleep, 1.5)  # a blocking call inside the control loop
        dog.start()
        assert blocked.wait(5.0), "the watchdog did not see the blocked loop"
        assert dog.trips == 1
        assert swept == []  # nothing could run on the blocked loop
        t0 = time.monotonic()
        while not swept and time.monotonic() - t0 < 5.0:
            time.sleep(0.05)
        assert swept == [True]  # once the loop is free again, the sweep it was handed runs
    finally:
        dog.stop()
        loop.call_soon_threadsafe(loop.stop)
        control.join(5.0)
        loop.close()
