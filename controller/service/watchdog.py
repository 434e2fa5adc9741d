"""The cycle watchdog: outputs to their safe state when a reactor's cycle stops beating.

The runner stamps a heartbeat (monotonic seconds of its clock) at the end of every cycle; the
watchdog compares it with the clock and, once the cycle has been silent for ``stall_s``, puts every
actuator in its safe state (once per stall).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from common.clock import Clock

log = logging.getLogger(__name__)


async def guard(
    name: str,
    clock: Clock,
    heartbeat: Callable[[], float],
    safe_outputs: Callable[[], Awaitable[None]],
    stall_s: float,
) -> None:
    """Watch ``heartbeat`` until cancelled; call ``safe_outputs`` when it is ``stall_s`` old.

    Args:
        name: Reactor id, for the log.
        clock: The service's clock (its ``speed``, when scaled, shortens the real poll interval).
        heartbeat: Monotonic time of the last completed cycle, s.
        safe_outputs: Puts every actuator in its safe state.
        stall_s: How long the cycle may be silent, s (> 0).
    """
    tripped = False
    speed = float(getattr(clock, "speed", 1.0))
    while True:
        await asyncio.sleep(stall_s / 4 / speed)
        stalled = clock.monotonic() - heartbeat() > stall_s
        if stalled and not tripped:
            log.error("reactor %s: cycle stalled; actuators to safe state", name)
            await safe_outputs()
        tripped = stalled
