"""The cycle watchdog: its own thread, its own (real) time, independent of the control loop.

The runner stamps a heartbeat at the end of every cycle. :class:`WatchdogThread` runs in a thread
of its own and watches the heartbeats with the operating system's monotonic clock, so a stalled
cycle task *and* a blocked event loop are both seen. When a heartbeat has not moved for
``stall_s`` (real seconds), it asks the event loop to put that reactor's actuators in their safe
state; if the loop does not do it within ``stall_s`` more — the loop itself is blocked, and no
driver can be reached from outside it — it calls ``on_blocked``, by default ending the process
(exit status 70) so the service manager restarts it; a restarted service resumes the run with its
outputs safe until its readings are trusted (docs/reliability.md).

This module (with service/clock.py) is the documented exception to "controller code never reads
the wall clock": a watchdog must not share the fate of the clock it guards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

EXIT_LOOP_BLOCKED = 70
"""Exit status when the event loop is blocked and outputs could not be made safe."""


def _exit_process() -> None:  # pragma: no cover - ends the process
    logging.shutdown()
    os._exit(EXIT_LOOP_BLOCKED)


class WatchdogThread:
    """Watches one reactor's heartbeat from a thread of its own.

    Args:
        name: Reactor id, for the log.
        heartbeat: Returns the runner's last heartbeat (any number that changes every cycle).
        safe_outputs: Coroutine function putting every actuator in its safe state.
        loop: The control event loop (where ``safe_outputs`` must run).
        stall_s: Real seconds without a new heartbeat that count as a stall (> 0).
        on_blocked: Called when the loop does not run ``safe_outputs`` within ``stall_s``.
    """

    def __init__(
        self,
        name: str,
        heartbeat: Callable[[], float],
        safe_outputs: Callable[[], Coroutine[Any, Any, None]],
        loop: asyncio.AbstractEventLoop,
        stall_s: float,
        on_blocked: Callable[[], None] = _exit_process,
    ) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.safe_outputs = safe_outputs
        self.loop = loop
        self.stall_s = stall_s
        self.on_blocked = on_blocked
        self.trips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watchdog-{name}", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (returns at once; the thread ends within a poll interval)."""
        self._stop.set()

    def _watch(self) -> None:
        last_beat = self.heartbeat()
        last_change = time.monotonic()
        tripped = False
        while not self._stop.wait(self.stall_s / 4):
            beat = self.heartbeat()
            now = time.monotonic()
            if beat != last_beat:
                last_beat, last_change, tripped = beat, now, False
                continue
            if tripped or now - last_change <= self.stall_s:
                continue
            tripped = True
            self.trips += 1
            log.error(
                "reactor %s: no cycle for %.1f s; actuators to safe state",
                self.name,
                now - last_change,
            )
            if not self._sweep_on_loop():
                log.critical(
                    "reactor %s: the event loop is blocked; outputs could not be made safe",
                    self.name,
                )
                self.on_blocked()

    def _sweep_on_loop(self) -> bool:
        """Run the safe-state sweep on the control loop; False when it did not end in time.

        The coroutine is created on the loop itself, so a loop that never gets to it leaves no
        half-started sweep behind.
        """
        finished = threading.Event()

        def start() -> None:
            task = self.loop.create_task(self.safe_outputs())
            task.add_done_callback(lambda t: _log_failure(self.name, t))
            task.add_done_callback(lambda _t: finished.set())

        self.loop.call_soon_threadsafe(start)
        return finished.wait(self.stall_s)


def _log_failure(name: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reactor %s: safe-state sweep failed: %r", name, task.exception())
