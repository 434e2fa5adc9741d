"""Helpers that turn raw values into :class:`Reading` objects with the right quality.

Every driver goes through :class:`Stamper`, so range checks, NaN handling, reasons and
timestamps are uniform: a value is GOOD only when it is finite and inside its valid range;
anything else is BAD with a reason and ``nan`` as value. :func:`aged` downgrades an old reading
to STALE.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime

from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import DriverError
from drivers.reading import Quality, Reading


@dataclass(frozen=True, slots=True)
class Stamp:
    """The two acquisition timestamps of a reading (monotonic seconds, aware UTC)."""

    monotonic_s: float
    utc: datetime


@dataclass(frozen=True, slots=True)
class ValidRange:
    """Inclusive range in which a value is physically plausible for the instrument.

    Attributes:
        low: Lowest valid value, in the reading's unit.
        high: Highest valid value, in the reading's unit.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"valid range low {self.low} > high {self.high}")

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high


class Stamper:
    """Builds readings stamped with an injected clock.

    Args:
        clock: Time source for the acquisition timestamps.
    """

    __slots__ = ("clock",)

    def __init__(self, clock: Clock = DEFAULT_CLOCK) -> None:
        self.clock = clock

    def now(self) -> Stamp:
        """Current time as a :class:`Stamp`."""
        return Stamp(self.clock.monotonic(), self.clock.utc())

    def value(
        self,
        value: float,
        unit: str,
        valid: ValidRange | None = None,
        *,
        at: Stamp | None = None,
    ) -> Reading:
        """A GOOD reading, or BAD when ``value`` is NaN/inf or outside ``valid``."""
        stamp = at or self.now()
        if not math.isfinite(value):
            return Reading.bad(unit, "nan: device reports no valid value", *_split(stamp))
        if valid is not None and value not in valid:
            return Reading.bad(
                unit,
                f"out_of_range: {value:g} {unit} not in [{valid.low:g}, {valid.high:g}]",
                *_split(stamp),
            )
        return Reading(float(value), unit, Quality.GOOD, stamp.monotonic_s, stamp.utc)

    def bad(self, unit: str, reason: str, *, at: Stamp | None = None) -> Reading:
        """A BAD reading (value ``nan``) with ``reason``."""
        return Reading.bad(unit, reason, *_split(at or self.now()))

    def failed(self, unit: str, exc: DriverError, *, at: Stamp | None = None) -> Reading:
        """A BAD reading whose reason comes from a driver exception."""
        return self.bad(unit, exc.reason, at=at)


def _split(stamp: Stamp) -> tuple[float, datetime]:
    return stamp.monotonic_s, stamp.utc


def aged(reading: Reading, now_monotonic_s: float, max_age_s: float) -> Reading:
    """Return ``reading`` as STALE if it is older than ``max_age_s`` seconds, else unchanged.

    A stale reading keeps its last value (for display) but is not trusted. BAD readings stay BAD.

    Args:
        reading: The reading to check.
        now_monotonic_s: Current monotonic time, seconds.
        max_age_s: Largest acceptable age, seconds (> 0).
    """
    if reading.quality is Quality.BAD:
        return reading
    age = reading.age_s(now_monotonic_s)
    if age <= max_age_s:
        return reading
    return dataclasses.replace(
        reading,
        quality=Quality.STALE,
        reason=f"stale: {age:.1f} s old (max {max_age_s:g} s)",
    )
