"""Notifications through apprise (docs/operator.md, "Notifications").

Harvest due and overdue, high-priority alarms, instruments lost, runs finished.

The notifier is one more listener on every runner's cycle. Each event that changes what an
operator must do becomes **one** notice; a cause that still stands after ``remind_after_min``
(a harvest not yet confirmed, an alarm not yet acknowledged) is repeated once per interval as a
reminder, until it is gone. Reminders count the service's own clock, so under ``--speed`` they
come sooner in wall time. Sending happens in the notifier's own task: a slow mail server never
delays a control cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import apprise

from controller.core.recipe_engine import Event
from controller.service.runner import ReactorRunner
from operator_web.texts import duration, number

log = logging.getLogger(__name__)

SENSOR_ALARMS = frozenset({"o2_sensor", "co2_sensor", "temp_sensor"})
"""Alarms that mean an instrument is lost (no trusted reading)."""
URGENT = frozenset({"high", "critical"})
"""Alarm priorities that are notified."""
_TYPES = {"info": apprise.NotifyType.INFO, "warning": apprise.NotifyType.WARNING}


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to send."""

    reactor: str
    kind: str
    subject: str
    title: str
    body: str
    level: str = "warning"


@dataclass(slots=True)
class _Standing:
    """A cause that was notified and may need reminders while it stands."""

    kind: str
    subject: str
    since_s: float
    last_s: float
    remind: bool


class Notifier:
    """Turns cycle events into notices and sends them through apprise.

    Args:
        urls: apprise URLs.
        remind_after_s: Repeat a standing cause after this long (service clock), s.
        page_url: The operator page's address, for links (``None``: no link).
    """

    def __init__(self, urls: list[str], remind_after_s: float, page_url: str | None) -> None:
        self.apprise = apprise.Apprise()
        for url in urls:
            if not self.apprise.add(url):
                log.warning("notifications: apprise does not understand URL %s", _safe(url))
        self.remind_after_s = remind_after_s
        self.page_url = page_url.rstrip("/") if page_url else None
        self.queue: asyncio.Queue[Notice] = asyncio.Queue()
        self.standing: dict[tuple[str, str, str], _Standing] = {}
        self.sent: list[Notice] = []
        self.failed = 0
        self._runners: list[ReactorRunner] = []

    # ------------------------------------------------------------------------------ wiring
    def attach(self, runners: dict[str, ReactorRunner]) -> None:
        """Listen to every runner's cycles."""
        for runner in runners.values():
            runner.listeners.append(self.on_cycle)
            self._runners.append(runner)

    def detach(self) -> None:
        """Stop listening."""
        for runner in self._runners:
            with contextlib.suppress(ValueError):
                runner.listeners.remove(self.on_cycle)
        self._runners.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Send queued notices until ``stop`` is set and the queue is empty."""
        while not (stop.is_set() and self.queue.empty()):
            getter = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if getter not in done:
                getter.cancel()
                continue
            await self.send(getter.result())

    async def send(self, notice: Notice) -> None:
        """Send one notice to every URL (failures are logged, never raised)."""
        log.info("notification: %s", notice.title)
        ok = False
        try:
            ok = bool(
                await self.apprise.async_notify(
                    body=notice.body, title=notice.title, notify_type=_TYPES[notice.level]
                )
            )
        except Exception:
            log.exception("notifications: sending '%s' failed", notice.title)
        if ok:
            self.sent.append(notice)
        else:
            self.failed += 1
            log.warning("notifications: '%s' was not delivered to every URL", notice.title)

    # ------------------------------------------------------------------------------ per cycle
    def on_cycle(self, runner: ReactorRunner, events: list[Event]) -> None:
        """The runner's listener: notices for this cycle's events, reminders for old causes."""
        rid = runner.config.id
        now = runner.clock.monotonic()
        for ev in events:
            notice = self.classify(runner, ev)
            if notice is None:
                continue
            key = (rid, notice.kind, notice.subject)
            if key in self.standing:
                continue  # the same cause, already said
            self.queue.put_nowait(notice)
            remind = notice.kind in ("harvest_due", "alarm", "instrument_lost")
            if remind:
                self.standing[key] = _Standing(notice.kind, notice.subject, now, now, remind)
        for key, st in list(self.standing.items()):
            if key[0] != rid:
                continue
            if not self._stands(runner, st):
                del self.standing[key]
            elif now - st.last_s >= self.remind_after_s - 1e-6:
                st.last_s = now
                self.queue.put_nowait(self._reminder(runner, st, now))

    def classify(self, runner: ReactorRunner, ev: Event) -> Notice | None:
        """The notice an event calls for, if any."""
        rid, d = runner.config.id, ev.detail
        where = f"{runner.config.name or rid} ({rid})"
        match ev.kind:
            case "harvest_due":
                name = str(d.get("name"))
                pump = d.get("action") == "pump"
                return Notice(
                    rid,
                    "harvest_due",
                    name,
                    f"Harvest due: {name} on {rid}",
                    f"{where}: harvest {name} is due after {duration(d.get('exposure_s'))} of "
                    f"in-spec exposure (mean O2 {number(d.get('o2_mean_pct'))} %, "
                    f"{d.get('excursions', 0)} excursion(s))."
                    + (
                        " The harvest pump collects it."
                        if pump
                        else " Collect it and confirm container and volume on the page."
                    )
                    + self._link(rid),
                    "info" if pump else "warning",
                )
            case "alarm" if d.get("to") == "active_unacknowledged":
                return self._alarm_notice(rid, where, d)
            case "run_complete" | "run_stopped" | "run_aborted":
                state = ev.kind.removeprefix("run_")
                run = runner.run.run_id if runner.run else "?"
                reason = f" Reason: {d['reason']}." if d.get("reason") else ""
                return Notice(
                    rid,
                    "run_finished",
                    run,
                    f"Run {state}: {rid}",
                    f"{where}: run {run} is {state}.{reason} Outputs are in their safe state."
                    + self._link(rid),
                    "info" if state == "complete" else "warning",
                )
        return None

    def _alarm_notice(self, rid: str, where: str, d: dict[str, Any]) -> Notice | None:
        alarm, priority = str(d.get("alarm")), str(d.get("priority"))
        message = str(d.get("message") or alarm)
        if alarm == "harvest_due":
            return None  # said by the harvest_due event itself
        if alarm == "harvest_overdue":
            kind, title = "harvest_overdue", f"Harvest overdue on {rid}"
        elif alarm in SENSOR_ALARMS:
            kind, title = "instrument_lost", f"Instrument lost on {rid}: {alarm}"
        elif priority in URGENT:
            kind, title = "alarm", f"{priority.capitalize()} alarm on {rid}: {alarm}"
        else:
            return None
        return Notice(
            rid,
            kind,
            alarm,
            title,
            f"{where}: {message} (priority {priority}). Acknowledge it on the page."
            + self._link(rid),
        )

    def _stands(self, runner: ReactorRunner, st: _Standing) -> bool:
        if st.kind == "harvest_due":
            return runner.engine is not None and st.subject in runner.engine.pending
        alarm = runner.alarms.alarms.get(st.subject)
        return alarm is not None and alarm.state.value == "active_unacknowledged"

    def _reminder(self, runner: ReactorRunner, st: _Standing, now: float) -> Notice:
        rid = runner.config.id
        ago = duration(now - st.since_s)
        if st.kind == "harvest_due":
            text = f"harvest {st.subject} still awaits confirmation, due since {ago}"
        else:
            text = f"alarm {st.subject} still unacknowledged, active since {ago}"
        return Notice(
            rid,
            f"reminder_{st.kind}",
            st.subject,
            f"Reminder: {text} ({rid})",
            f"{runner.config.name or rid} ({rid}): {text}." + self._link(rid),
        )

    def _link(self, rid: str) -> str:
        return f"\n{self.page_url}/reactor/{rid}" if self.page_url else ""


def _safe(url: str) -> str:
    """A URL without its credentials, for logs."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}…@{rest.rpartition('@')[2]}" if "@" in rest else url
