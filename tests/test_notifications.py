"""Notifications through apprise to a local webhook receiver (apprise's ``json://`` on loopback):
harvest due and a high-priority alarm arrive exactly once each, and a reminder after its interval.
The alarm is provoked on the plant (a door left open), the sensors answer over the wire."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from operator_web.serve import PageServer
from tests.page_kit import page_stack

RECIPE_5PCT = """name = "5 % hold with a harvest at 3 min of exposure"
[[phases]]
name = "hold"
o2_pct = 5.0
o2_band_pct = 0.3
co2_pct = 5.0
co2_band_pct = 1.0
until = "exposure"
duration_h = 1.0
  [[phases.harvests]]
  name = "CM-3min"
  at_exposure_h = 0.05
"""


class Receiver:
    """A webhook receiver on loopback: what apprise's json:// posts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def hook(self, request: Request) -> Response:
        self.messages.append(await request.json())
        return Response(status_code=200)

    def titles(self, prefix: str) -> list[str]:
        return [m["title"] for m in self.messages if m["title"].startswith(prefix)]


async def _settle(check: Any, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)


async def test_harvest_due_and_alarm_once_then_a_reminder(tmp_path: Path) -> None:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    server = PageServer.bind(app, "127.0.0.1", 0)
    await server.start()
    url = f"json://127.0.0.1:{server.port}/hook"
    limits = {"o2_deviation_delay_s": 30.0, "harvest_overdue_s": 86000.0}
    try:
        async with page_stack(
            tmp_path, RECIPE_5PCT, limits=limits, notifications=[url], remind_after_min=5.0
        ) as ps:
            st = ps.st
            for _ in range(120):  # O2 down to 5 %, then 3 min in band
                await st.cycles(10)
                if st.journal_events("harvest_due"):
                    break
            await _settle(lambda: receiver.titles("Harvest due"))
            st.link.door_open = True  # O2 climbs whatever N2 does: o2_deviation (high)
            await st.cycles(120)
            assert st.alarm("o2_deviation") == "active_unacknowledged"
            await _settle(lambda: receiver.titles("High alarm"))
            await st.cycles(60)
            await asyncio.sleep(0.5)
            assert receiver.titles("Harvest due") == ["Harvest due: CM-3min on ws1"]
            assert receiver.titles("High alarm") == ["High alarm on ws1: o2_deviation"]
            assert not receiver.titles("Reminder")
            body = next(m["message"] for m in receiver.messages if m["title"].startswith("High"))
            assert f"{ps.url}/reactor/ws1" in body  # a link to the page
            await st.cycles(180)  # five minutes after the alarm: still unacknowledged
            await _settle(lambda: receiver.titles("Reminder: alarm"))
            assert receiver.titles("Reminder: alarm") == [
                "Reminder: alarm o2_deviation still unacknowledged, active since 5 min 00 s (ws1)"
            ]
            assert receiver.titles("Reminder: harvest")  # CM-3min is still not confirmed
            assert receiver.titles("High alarm") == ["High alarm on ws1: o2_deviation"]
    finally:
        await server.stop()
