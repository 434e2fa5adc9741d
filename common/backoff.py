"""Exponential back-off with jitter, measured on an injected clock: the one back-off of the project.

Every reconnect or retry loop uses it: Modbus and serial reconnects (as a *deadline*: a control
cycle never sleeps waiting for a bus; callers ask :meth:`Backoff.ready` and fail fast until then),
the start-up wait of buses and lines (:mod:`drivers.transport.startup`, through
:func:`doubling_delay_s`), the controller's MQTT link and the recorder's broker and store
reconnects (they sleep :meth:`Backoff.failed`'s delay), and the recorder's gap requests.
"""

from __future__ import annotations

import random

from common.clock import Clock


def doubling_delay_s(failures: int, initial_s: float, max_s: float, threshold: int = 1) -> float:
    """The delay after ``failures`` consecutive failures, without jitter, s.

    0 while ``failures < threshold``; then ``initial_s * 2**k`` (k = failures beyond the threshold)
    capped at ``max_s``. Loops that are timed by a caller's clock (the recorder's gap requests)
    use this directly; :class:`Backoff` adds jitter and keeps the deadline.
    """
    beyond = failures - threshold
    if beyond < 0 or initial_s == 0:
        return 0.0
    return min(max_s, initial_s * 2.0 ** min(beyond, 30))


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
        delay = doubling_delay_s(self.failures, self.initial_s, self.max_s, self.threshold)
        if delay == 0.0:
            return 0.0
        delay *= 1.0 + 0.1 * random.random()
        self._not_before = self._clock.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        """Record a success: reset the failure count and allow attempts immediately."""
        self.failures = 0
        self._not_before = -float("inf")
