"""Words for people: durations, values and one line per run event (page log, notifications)."""

from __future__ import annotations

import math
from typing import Any

ALARM_TEXT = {
    "active_unacknowledged": "active, unacknowledged",
    "active_acknowledged": "active, acknowledged",
    "returned_unacknowledged": "returned to normal, unacknowledged",
    "shelved": "shelved",
    "normal": "normal",
    "suppressed": "suppressed",
}
"""ISA-18.2 alarm states as the page writes them."""


def duration(seconds: float | None) -> str:
    """``17 h 42 min``, ``3 min 05 s``, ``2 d 4 h`` (``-`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0, round(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def number(value: float | None, digits: int = 2) -> str:
    """A value with fixed decimals, ``-`` when missing."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def event_line(kind: str, detail: dict[str, Any]) -> str | None:  # noqa: PLR0912 - one case per kind
    """One line for the run log, or ``None`` for events an operator need not read."""
    d = detail
    match kind:
        case "run_start":
            return f"run started: {d.get('recipe', '')}"
        case "run_resumed":
            return "run resumed after a controller restart"
        case "run_complete":
            return "run complete"
        case "run_stopped" | "run_aborted":
            reason = f" ({d['reason']})" if d.get("reason") else ""
            return f"run {kind.removeprefix('run_')}{reason}"
        case "phase_start":
            return f"phase '{d.get('phase')}' started"
        case "phase_end":
            return f"phase '{d.get('phase')}' ended"
        case "phase_timeout":
            return f"phase '{d.get('phase')}' timed out"
        case "phase_held" | "phase_restarted":
            return f"phase '{d.get('phase')}' {kind.removeprefix('phase_')}"
        case "harvest_due":
            return (
                f"harvest {d.get('name')} due: exposure {duration(d.get('exposure_s'))}, "
                f"mean O2 {number(d.get('o2_mean_pct'))} %"
                + (" (released by its latest time)" if d.get("forced_by_latest") else "")
            )
        case "harvest_done":
            vol = f", {number(d.get('volume_ml'), 1)} mL" if d.get("volume_ml") else ""
            box = f" in {d['container']}" if d.get("container") else ""
            return f"harvest {d.get('harvest')} collected by {d.get('by')}{vol}{box}"
        case "alarm":
            state = ALARM_TEXT.get(str(d.get("to")), str(d.get("to")))
            msg = f": {d['message']}" if d.get("message") and d.get("to") != "normal" else ""
            return f"alarm {d.get('alarm')} ({d.get('priority')}) {state}{msg}"
        case "setpoint_changed":
            return (
                f"set point {d.get('variable')} {d.get('old')} -> {d.get('new')} by "
                f"{d.get('user')}: {d.get('reason')}"
            )
        case "note":
            return f"note by {d.get('user')}: {d.get('text')}"
        case "interlock":
            return f"interlock {d.get('interlock')} {d.get('state')}"
        case "actuator_fault" | "command_failed" | "command_not_applied":
            return f"{kind.replace('_', ' ')}: {d}"
        case "pump_start":
            return f"harvest pump started for {d.get('harvest')}"
    return None
