"""Non-blocking exponential backoff for reconnects and silent Modbus units.

A control cycle must never sleep waiting for a bus, so backoff here is a *deadline*: callers ask
:meth:`Backoff.ready` and, if not ready, fail fast (BAD reading) and try again on a later cycle.
Blocking retry with sleeps (what :mod:`stamina` does) is used only at start-up, see
:meth:`drivers.transport.modbus.ModbusHub.connect`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import stamina

from drivers.clock import Clock
from drivers.errors import BusDisconnectedError


async def open_with_retry(open_once: Callable[[], Awaitable[None]], wait_s: float) -> None:
    """Open a bus or line now; with ``wait_s`` > 0 keep retrying that long (start-up only).

    Exponential backoff with jitter through :func:`stamina.retry_context`, for a gateway or
    simulator that may still be booting.

    Raises:
        BusDisconnectedError: Not open within ``wait_s``.
    """
    if wait_s <= 0:
        await open_once()
        return
    async for attempt in stamina.retry_context(
        on=BusDisconnectedError,
        attempts=None,
        timeout=wait_s,
        wait_initial=0.05,
        wait_max=2.0,
        wait_jitter=0.1,
    ):
        with attempt:
            await open_once()


class Backoff:
    """Exponential backoff with a small random jitter, measured on an injected clock.

    After ``threshold`` consecutive failures the next attempt is deferred by
    ``initial_s * 2**k`` seconds (k = failures beyond the threshold, capped at ``max_s``) plus up to
    10 % jitter so that several buses do not retry in lock-step.

    Args:
        clock: Time source.
        initial_s: First delay, seconds (>= 0).
        max_s: Largest delay, seconds (>= initial_s).
        threshold: Consecutive failures tolerated before delays start (>= 1).
    """

    __slots__ = ("_clock", "_not_before", "failures", "initial_s", "max_s", "threshold")

    def __init__(self, clock: Clock, initial_s: float, max_s: float, threshold: int = 1) -> None:
        if initial_s < 0 or max_s < initial_s or threshold < 1:
            raise ValueError("need 0 <= initial_s <= max_s and threshold >= 1")
        self._clock = clock
        self.initial_s = initial_s
        self.max_s = max_s
        self.threshold = threshold
        self.failures = 0
        self._not_before = -float("inf")

    def ready(self) -> bool:
        """True when an attempt is allowed now."""
        return self._clock.monotonic() >= self._not_before

    def remaining_s(self) -> float:
        """Seconds until the next attempt is allowed (0 when ready)."""
        return max(0.0, self._not_before - self._clock.monotonic())

    def failed(self) -> float:
        """Record a failure; return the delay (s) before the next attempt is allowed."""
        self.failures += 1
        beyond = self.failures - self.threshold
        if beyond < 0 or self.initial_s == 0:
            return 0.0
        delay = min(self.max_s, self.initial_s * 2.0 ** min(beyond, 30))
        delay *= 1.0 + 0.1 * random.random()
        self._not_before = self._clock.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        """Record a success: reset the failure count and allow attempts immediately."""
        self.failures = 0
        self._not_before = -float("inf")
