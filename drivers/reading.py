"""The measurement seam between drivers and the controller.

Every value a driver returns is a :class:`Reading`: a number with its unit, a quality flag with a
reason, and two timestamps (monotonic for control arithmetic, UTC for records). Control never acts
on a reading whose quality is not trusted (see :meth:`Reading.trusted`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Quality(StrEnum):
    """How far a reading can be trusted.

    ``GOOD`` and ``SIMULATED`` are trusted by control; ``STALE`` (too old) and ``BAD`` (sensor or
    wire fault, sentinel, out of range) are not.
    """

    GOOD = "good"
    STALE = "stale"
    BAD = "bad"
    SIMULATED = "simulated"


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement.

    Attributes:
        value: The measured value in ``unit``; ``nan`` when the quality is ``BAD``.
        unit: Canonical unit string, e.g. ``"%"`` (vol-% O2 or CO2), ``"degC"``, ``"L/min"``.
        quality: Trust flag, see :class:`Quality`.
        monotonic_s: Monotonic clock time of acquisition, seconds.
        utc: Wall-clock time of acquisition (timezone-aware, UTC).
        reason: Why the quality is not good (empty when good): ``"<keyword>: <message>"``, e.g.
            ``"sentinel: 0x8000 (not available)"``; the keywords are listed in
            :data:`drivers.errors.REASON_KEYWORDS`.
    """

    value: float
    unit: str
    quality: Quality
    monotonic_s: float
    utc: datetime
    reason: str = ""

    @property
    def trusted(self) -> bool:
        """True when control may act on this value (good or simulated, and finite)."""
        return self.quality in (Quality.GOOD, Quality.SIMULATED) and math.isfinite(self.value)

    @property
    def keyword(self) -> str:
        """The reason's keyword (``"timeout"``, ``"port_not_found"`` ...; ``""`` when good).

        One of :data:`drivers.errors.REASON_KEYWORDS`.
        """
        return self.reason.partition(":")[0].strip()

    def age_s(self, now_monotonic_s: float) -> float:
        """Seconds since acquisition, measured on the monotonic clock."""
        return now_monotonic_s - self.monotonic_s

    @classmethod
    def bad(cls, unit: str, reason: str, monotonic_s: float, utc: datetime) -> Reading:
        """A bad-quality reading carrying no number (value is ``nan``)."""
        return cls(math.nan, unit, Quality.BAD, monotonic_s, utc, reason)
