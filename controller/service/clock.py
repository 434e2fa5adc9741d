"""Injected time for the service: the only place the controller side touches the wall clock.

:class:`ScaledClock` runs ``speed`` times faster than the wall (``hypoxia run --speed 60`` makes a
minute of protocol pass every second) and can resume a run's simulated timeline after a restart:
``ScaledClock.resume(speed, last_sim_utc, last_wall_utc)`` continues from where the journal's last
checkpoint left it, counting the real outage at the same speed. Tests use
:class:`SteppedClock`, which only moves when the service sleeps.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from common.clock import Clock


@runtime_checkable
class CycleClock(Clock, Protocol):
    """A clock the control cycle can wait on."""

    async def sleep_until(self, monotonic_s: float) -> None:
        """Return once :meth:`monotonic` has reached ``monotonic_s``."""
        ...

    def wall_utc(self) -> datetime:
        """The real wall-clock time (differs from :meth:`utc` when time is scaled)."""
        ...


class ScaledClock:
    """Wall clock running ``speed`` times faster (1 = real time).

    Args:
        speed: Time scale, 0.1-10000.
        start_utc: Simulated UTC at construction (default: the real time now).
    """

    def __init__(self, speed: float = 1.0, start_utc: datetime | None = None) -> None:
        if not 0.1 <= speed <= 10_000:
            msg = f"speed {speed} is outside 0.1-10000"
            raise ValueError(msg)
        self.speed = speed
        self._m0 = time.monotonic()
        self._wall0 = datetime.now(UTC)
        self._utc0 = start_utc if start_utc is not None else self._wall0

    @classmethod
    def resume(cls, speed: float, last_sim_utc: datetime, last_wall_utc: datetime) -> ScaledClock:
        """A clock continuing a simulated timeline.

        The real time since ``last_wall_utc`` passes at ``speed`` on top of ``last_sim_utc``.
        """
        real_gap_s = max(0.0, (datetime.now(UTC) - last_wall_utc).total_seconds())
        return cls(speed, last_sim_utc + timedelta(seconds=real_gap_s * speed))

    def _elapsed_s(self) -> float:
        return (time.monotonic() - self._m0) * self.speed

    def monotonic(self) -> float:
        """Scaled monotonic seconds since construction."""
        return self._elapsed_s()

    def utc(self) -> datetime:
        """Simulated UTC time."""
        return self._utc0 + timedelta(seconds=self._elapsed_s())

    def wall_utc(self) -> datetime:
        """Real UTC time."""
        return self._wall0 + timedelta(seconds=time.monotonic() - self._m0)

    async def sleep_until(self, monotonic_s: float) -> None:
        """Sleep in real time until the scaled clock reaches ``monotonic_s``."""
        delay = (monotonic_s - self.monotonic()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)


class SteppedClock:
    """Test clock: time jumps to whatever the service waits for (no real waiting).

    Args:
        start_utc: UTC at monotonic 0.
    """

    def __init__(self, start_utc: datetime) -> None:
        self._now = 0.0
        self._utc0 = start_utc

    def monotonic(self) -> float:
        """Current simulated seconds."""
        return self._now

    def utc(self) -> datetime:
        """Simulated UTC."""
        return self._utc0 + timedelta(seconds=self._now)

    def wall_utc(self) -> datetime:
        """Same as :meth:`utc` (there is no separate wall)."""
        return self.utc()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            msg = "a clock cannot go backwards"
            raise ValueError(msg)
        self._now += seconds

    async def sleep_until(self, monotonic_s: float) -> None:
        """Jump to ``monotonic_s`` and yield to other tasks once."""
        self._now = max(self._now, monotonic_s)
        await asyncio.sleep(0)
