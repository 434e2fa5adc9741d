"""Injected time: the one clock protocol every layer uses (none of them reads the wall clock).

Drivers stamp readings and schedule reconnects with a :class:`Clock`; nothing else in
``drivers/`` calls :mod:`time` or :func:`datetime.now`. Production uses :class:`SystemClock`;
tests and the lock-step twin use :class:`ManualClock` (or their own implementation).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A time source: monotonic seconds for arithmetic, aware UTC datetimes for records."""

    def monotonic(self) -> float:
        """Monotonic time in seconds (arbitrary origin, never goes backwards)."""
        ...

    def utc(self) -> datetime:
        """Current wall-clock time as a timezone-aware UTC datetime."""
        ...


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Epoch used by simulated clocks when no start date is given."""


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`datetime.now` in UTC."""

    def monotonic(self) -> float:
        """Monotonic time in seconds."""
        return time.monotonic()

    def utc(self) -> datetime:
        """Current time, timezone-aware UTC."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, lock-step simulation).

    Args:
        start_monotonic_s: Initial monotonic reading, seconds.
        start_utc: UTC time that corresponds to ``start_monotonic_s``; defaults to the epoch.
    """

    def __init__(self, start_monotonic_s: float = 1000.0, start_utc: datetime = EPOCH) -> None:
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        self._t0 = start_monotonic_s
        self._now = start_monotonic_s
        self._utc0 = start_utc

    def monotonic(self) -> float:
        """Current simulated monotonic time, seconds."""
        return self._now

    def utc(self) -> datetime:
        """Simulated UTC time (start time plus elapsed simulated seconds)."""
        return self._utc0 + timedelta(seconds=self._now - self._t0)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds


DEFAULT_CLOCK: Clock = SystemClock()
"""Shared default instance used when no clock is injected."""
