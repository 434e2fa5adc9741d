"""``hypoxia ctl status`` for people: one table per reactor from the service's status reply.

Values carry units and sensible decimals next to their set point and band; the phase with its
progress; every harvest with its exposure clock and expected due time; the alarms an operator must
see. The reply's ``overview`` (:mod:`controller.service.overview`) holds all of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from operator_web.texts import duration

DIGITS = {"o2": 2, "co2": 2, "temp": 1, "do": 1, "cells": 2}
LABELS = {
    "o2": "O2",
    "co2": "CO2",
    "temp": "temperature",
    "do": "DO",
    "cells": "O2 at cells (est.)",
}
ALARM_STATES = {
    "active_unacknowledged": "ACTIVE, unacknowledged",
    "active_acknowledged": "active, acknowledged",
    "returned_unacknowledged": "returned, unacknowledged",
    "shelved": "shelved",
}


def clock(iso: str | None, now_iso: str | None = None) -> str:
    """Local ``HH:MM`` (with the day when it is not today's)."""
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso).astimezone()
    now = datetime.fromisoformat(now_iso).astimezone() if now_iso else datetime.now().astimezone()
    return f"{t:%H:%M}" if t.date() == now.date() else f"{t:%a %d %b %H:%M}"


def _value_row(key: str, v: dict[str, Any]) -> tuple[str, Text, str, str]:
    d = DIGITS[key]
    if v["value"] is None:
        shown = Text(f"- ({v.get('quality') or 'no reading'})", style="bold red")
    else:
        style = "yellow" if v.get("in_band") is False else "green"
        shown = Text(f"{v['value']:.{d}f} {v['unit']}", style=f"bold {style}")
    sp = "not controlled" if v["sp"] is None else f"{v['sp']:.{d}f} {v['unit']}"
    band = "" if v["band"] is None else f"± {v['band']:.{d}f}"
    return LABELS[key], shown, sp, band


def _harvest_line(h: dict[str, Any], now: str | None) -> tuple[str, str]:
    match h["state"]:
        case "counting":
            text = (
                f"{duration(h['exposure_s'])} of {duration(h['target_s'])} in band, "
                f"due about {clock(h['due_utc'], now)}"
            )
        case "due":
            text = f"DUE since {clock(h['released_utc'], now)}: collect and confirm"
        case "overdue":
            text = f"OVERDUE since {clock(h['released_utc'], now)}: confirm now"
        case "done":
            text = f"collected {clock(h['done_utc'], now)} after {duration(h['exposure_s'])}"
        case "planned":
            text = f"at {duration(h['target_s'])} of exposure in '{h['phase']}'"
        case _:
            text = "not released"
    return h["name"], text


def reactor_table(rid: str, view: dict[str, Any]) -> RenderableType:
    """One reactor: values, phase, harvests, alarms."""
    phase = view["phase"]
    title = f"{view['name']} ({rid})"
    if phase.get("name"):
        where = (
            f"phase {phase['index'] + 1}/{phase['count']} '{phase['name']}' {phase['state']}: "
            f"{duration(phase['done_s'])} of {duration(phase['target_s'])}"
            + (" in band" if phase.get("basis") == "exposure" else "")
        )
    else:
        where = f"run {phase.get('state', 'idle')}"
    caption = f"run {view['run_id']} · {view.get('recipe') or ''}"
    if view.get("time_scale", 1.0) != 1.0:
        caption += f" · simulated time x{view['time_scale']:g}"
    values = Table(title=f"{title} · {where}", caption=caption, title_justify="left")
    values.add_column("")
    values.add_column("now", justify="right")
    values.add_column("set point", justify="right")
    values.add_column("band")
    for key in ("o2", "co2", "temp", "do", "cells"):
        if key in view["values"]:
            values.add_row(*_value_row(key, view["values"][key]))
    parts: list[RenderableType] = [values]
    if view["harvests"]:
        harvests = Table("harvest", "exposure clock", box=None, padding=(0, 2))
        for h in view["harvests"]:
            name, text = _harvest_line(h, view.get("utc"))
            style = {"due": "bold yellow", "overdue": "bold red"}.get(h["state"], "")
            harvests.add_row(name, Text(text, style=style))
        parts.append(harvests)
    if view["alarms"]:
        alarms = Table("alarm", "priority", "state", "message", box=None, padding=(0, 2))
        for a in view["alarms"]:
            style = "bold red" if a["priority"] in ("high", "critical") else "yellow"
            alarms.add_row(
                Text(a["name"], style=style),
                a["priority"],
                ALARM_STATES.get(a["state"], a["state"]),
                a.get("message", ""),
            )
        parts.append(alarms)
    else:
        parts.append(Text("no active alarms", style="dim"))
    return Group(*parts, Text(""))


def status_view(reply: dict[str, Any]) -> RenderableType:
    """Every reactor of a ``status`` reply."""
    reactors = reply.get("reactors", {})
    tables = [reactor_table(rid, r["overview"]) for rid, r in reactors.items() if "overview" in r]
    return Group(*tables) if tables else Text("no reactors")


def watch_status(fetch: Callable[[], dict[str, Any]], every_s: float | None) -> None:
    """Print the status once, or refresh it every ``every_s`` until Ctrl-C."""
    console = Console()
    if every_s is None:
        console.print(status_view(fetch()))
        return
    with contextlib.suppress(KeyboardInterrupt), Live(console=console, screen=False) as live:
        while True:
            live.update(status_view(fetch()))
            time.sleep(max(0.2, every_s))
