"""One HTML document per record: the Jinja2 template ``templates/record.html.j2``, plots inline.

The same document is the screen version and, printed by :mod:`records.pdf`, the PDF: no CDN, no
fonts or scripts to fetch (a Content-Security-Policy forbids every external load).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2

from records import plots
from records.model import BatchRecord

HIDDEN_EVENTS = frozenset(
    {"alarm", "harvest_due", "harvest_done", "phase_start", "phase_end", "run_start"}
)
"""Event kinds shown in their own sections, not in the event list."""


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min 05 s``, ``26 h 03 min``; ``—`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 120:
        return f"{sign}{s:.0f} s" if s >= 10 or s == int(s) else f"{sign}{s:.1f} s"
    if s < 2 * 3600:
        m, r = divmod(round(s), 60)
        return f"{sign}{m} min {r:02d} s"
    h, r = divmod(round(s), 3600)
    return f"{sign}{h} h {r // 60:02d} min"


def run_time(seconds: float | None) -> str:
    """``+1:02:05`` (h:mm:ss since the run started)."""
    if seconds is None:
        return "—"
    h, r = divmod(round(seconds), 3600)
    return f"+{h}:{r // 60:02d}:{r % 60:02d}"


def utc(value: datetime | str | None) -> str:
    """``2026-11-27 08:12:05Z``."""
    if value is None or value == "":
        return "—"
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"{stamp:%Y-%m-%d %H:%M:%S}Z"


def number(value: float | None, digits: int = 3, unit: str = "") -> str:
    """A number with ``digits`` decimals and a unit, ``—`` when unknown."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def plain(value_json: str) -> str:
    """An audit value (JSON text) as a person reads it: strings unquoted, null as ``—``."""
    try:
        value = json.loads(value_json)
    except (json.JSONDecodeError, TypeError):
        return str(value_json)
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v is not None)
    return json.dumps(value)


def detail(event: dict[str, Any]) -> str:
    """An event's details as ``key: value`` text (time and kind left out)."""
    skip = {"seq", "utc", "t_s", "kind"}
    return ", ".join(f"{k}: {v}" for k, v in event.items() if k not in skip and v not in (None, ""))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_template),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=duration, run_time=run_time, utc=utc, number=number, plain=plain, detail=detail
    )
    return env


def _template(name: str) -> str:
    return resources.files("records").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(rec: BatchRecord) -> str:
    """The whole record as one self-contained HTML document."""
    template = _environment().get_template("record.html.j2")
    events = [e for e in rec.events if e["kind"] not in HIDDEN_EVENTS]
    alarm_events = [e for e in rec.events if e["kind"] == "alarm"]
    harvest_plots = {h.name: plots.harvest_plot(rec, h) for h in rec.shown_harvests}
    return template.render(
        rec=rec,
        run_plot=plots.run_plot(rec),
        harvest_plots=harvest_plots,
        other_events=events,
        alarm_events=alarm_events,
        excursion_count=len(plots.all_excursions(rec)),
    )
