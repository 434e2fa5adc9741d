"""What a record derives from stored samples and journaled events: excursions, gaps, gas, alarms.

Pure functions on plain data, shared by service runs (samples from the store) and twin runs
(samples from the twin's trace). Excursions follow exactly the rule of the exposure clock
(:mod:`controller.core.exposure`): a stay out of band, after the phase's first band entry, of at
least the debounce; it belongs to the harvest window in which it started, and one in progress at a
harvest is cut there, its remainder belonging to the next window (each piece counted if long
enough). The journal's per-harvest counts are the authority; the record shows both and says so
when they differ.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

BAND_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Sample:
    """One control cycle as recorded: run time, the exposure variable, phase and its state."""

    t_s: float
    value_pct: float | None
    """O2 (or DO) as the exposure clock saw it: ``None`` when untrusted or missing."""
    phase: str | None
    phase_state: str | None = None


@dataclass(frozen=True, slots=True)
class Band:
    """The exposure band of a phase."""

    setpoint_pct: float
    band_pct: float

    def inside(self, value_pct: float | None) -> bool:
        """True when the value is trusted and in band (the exposure clock's test)."""
        return value_pct is not None and abs(value_pct - self.setpoint_pct) <= (
            self.band_pct + BAND_EPS
        )


@dataclass(slots=True)
class Excursion:
    """A stay out of band within one harvest window (times: run seconds).

    Attributes:
        start_s / end_s: Out of band from ``start_s`` until back in at ``end_s``.
        peak_pct: The recorded value farthest from the set point (``None``: no trusted value).
        untrusted_s: Time within it with no trusted reading, s.
        ongoing: Still out of band at the end of the recorded data.
        cut_before / cut_after: It began in the previous window / continues into the next one.
        harvest: The harvest whose window holds its start (``None``: the window still open).
        causes: What the journal and the run's inputs say about why, where known.
    """

    phase: str
    start_s: float
    end_s: float
    setpoint_pct: float
    band_pct: float
    peak_pct: float | None = None
    untrusted_s: float = 0.0
    ongoing: bool = False
    cut_before: bool = False
    cut_after: bool = False
    harvest: str | None = None
    causes: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """How long it lasted (in this window), s."""
        return self.end_s - self.start_s

    @property
    def peak_deviation_pct(self) -> float | None:
        """Peak minus set point, % abs."""
        return None if self.peak_pct is None else self.peak_pct - self.setpoint_pct


@dataclass(frozen=True, slots=True)
class Window:
    """A harvest's exposure window as journaled: opened, cut at the harvest."""

    harvest: str
    phase: str
    opened_s: float
    at_s: float


def find_excursions(
    samples: Sequence[Sample],
    bands: dict[str, Band],
    windows: Sequence[Window],
    period_s: float,
    debounce_s: float,
) -> list[Excursion]:
    """Excursions of every banded phase, cut at harvests, with their harvest assigned.

    Args:
        samples: Every recorded cycle in order.
        bands: The exposure band of each phase that has an O2 (or DO) set point.
        windows: The journaled harvest windows.
        period_s: Control period, s (a cycle's sample accounts the period ending at it).
        debounce_s: Shortest stay that counts, s (the engine's, from the journal's checkpoint).
    """
    raw: list[Excursion] = []
    current: Excursion | None = None
    phase: str | None = None
    opened = False
    last_t = 0.0
    for s in samples:
        if s.phase != phase:
            if current is not None:
                current.end_s, current.ongoing = last_t, True
                raw.append(current)
            phase, opened, current = s.phase, False, None
        last_t = s.t_s
        band = bands.get(s.phase or "")
        if band is None:
            continue
        if band.inside(s.value_pct):
            opened = True
            if current is not None:
                current.end_s = s.t_s - period_s
                raw.append(current)
                current = None
            continue
        if not opened:
            continue
        if current is None:
            start = s.t_s - period_s
            current = Excursion(str(s.phase), start, start, band.setpoint_pct, band.band_pct)
    if current is not None:
        current.end_s, current.ongoing = last_t, True
        raw.append(current)
    times = [s.t_s for s in samples]
    out = []
    for piece in (p for e in raw for p in _cut(e, windows)):
        if piece.duration_s < debounce_s - 1e-6:
            continue
        lo = bisect.bisect_right(times, piece.start_s + 1e-9)
        hi = bisect.bisect_right(times, piece.end_s + 1e-9)
        inside = [s.value_pct for s in samples[lo:hi]]
        trusted = [v for v in inside if v is not None]
        sp = piece.setpoint_pct
        piece.peak_pct = max(trusted, key=lambda v: abs(v - sp)) if trusted else None
        piece.untrusted_s = period_s * (len(inside) - len(trusted))
        out.append(piece)
    return out


def _cut(exc: Excursion, windows: Sequence[Window]) -> list[Excursion]:
    """Split an excursion at the harvests it spans; assign each piece its window."""
    cuts = sorted(w.at_s for w in windows if w.phase == exc.phase and exc.start_s < w.at_s)
    cuts = [c for c in cuts if c < exc.end_s]
    bounds = [exc.start_s, *cuts, exc.end_s]
    out = []
    for k in range(len(bounds) - 1):
        piece = Excursion(
            exc.phase,
            bounds[k],
            bounds[k + 1],
            exc.setpoint_pct,
            exc.band_pct,
            ongoing=exc.ongoing and k == len(bounds) - 2,
            cut_before=k > 0,
            cut_after=k < len(bounds) - 2,
        )
        piece.harvest = next(
            (
                w.harvest
                for w in windows
                if w.phase == exc.phase and w.opened_s - 1e-6 <= piece.start_s < w.at_s - 1e-6
            ),
            None,
        )
        out.append(piece)
    return out


def held_within(samples: Sequence[Sample], start_s: float, end_s: float) -> bool:
    """True when the phase was held at any cycle in ``(start_s, end_s]``."""
    return any(start_s < s.t_s <= end_s + 1e-9 and s.phase_state == "held" for s in samples)


@dataclass(frozen=True, slots=True)
class Gap:
    """Recorded telemetry missing between two cycles (run seconds)."""

    after_s: float
    before_s: float
    missing_s: float


def telemetry_gaps(times_s: Sequence[float], period_s: float) -> list[Gap]:
    """Places where consecutive recorded cycles are more than 2.5 periods apart."""
    return [
        Gap(a, b, b - a - period_s)
        for a, b in itertools.pairwise(times_s)
        if b - a > 2.5 * period_s
    ]


def missing_ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Ranges of sequence numbers missing between the smallest and the largest held."""
    held = sorted(set(seqs))
    return [(a + 1, b - 1) for a, b in itertools.pairwise(held) if b > a + 1]


def gas_used_l(flows_lpm: dict[str, Sequence[float | None]], period_s: float) -> dict[str, float]:
    """Litres of each gas: every recorded cycle's flow held for one control period."""
    return {
        gas: sum(v for v in values if v is not None) * period_s / 60.0
        for gas, values in flows_lpm.items()
    }


@dataclass(slots=True)
class AlarmSpan:
    """One activation of an alarm (run seconds); ``cleared_s`` is ``None`` while active."""

    alarm: str
    priority: str
    active_s: float
    message: str
    acknowledged_s: float | None = None
    cleared_s: float | None = None
    cleared_how: str = ""


def alarm_spans(events: Sequence[dict[str, Any]]) -> list[AlarmSpan]:
    """Activations of every alarm, from the journal's ``alarm`` events."""
    open_spans: dict[str, AlarmSpan] = {}
    spans: list[AlarmSpan] = []
    for ev in events:
        if ev.get("kind") != "alarm":
            continue
        name, to, t = str(ev.get("alarm")), str(ev.get("to")), float(ev["t_s"])
        span = open_spans.get(name)
        if to == "active_unacknowledged" and span is None:
            span = AlarmSpan(name, str(ev.get("priority", "")), t, str(ev.get("message", "")))
            open_spans[name] = span
            spans.append(span)
        elif (
            span is not None
            and to in ("active_acknowledged", "normal")
            and (ev.get("why") == "acknowledged")
        ):
            span.acknowledged_s = t
            if to == "normal":
                del open_spans[name]
        elif span is not None and to in ("returned_unacknowledged", "normal", "suppressed"):
            if span.cleared_s is None:
                span.cleared_s, span.cleared_how = t, str(ev.get("why", to))
            if to != "returned_unacknowledged":
                del open_spans[name]
    return spans
