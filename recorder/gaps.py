"""Per-reactor sequence tracking: detect gaps, ask for replays, give up (bounded) and say so.

Every ``telemetry`` and ``event`` message of a reactor carries ``seq`` (docs/mqtt.md). For each
reactor the tracker keeps the highest contiguous number and the settled ranges above it (received,
or given up). The spool persists this state in the same transaction as the messages, so a restart
neither re-requests what it has nor forgets what is missing.

A gap between two received numbers shows by itself; the *tail* of a stream does not (nothing
follows the last messages of a run). So the tracker also keeps the highest number the controller
has announced in the reactor's retained ``state`` message (``last_seq``): numbers above the last
one received and up to it are missing like any gap.

A gap is first requested after ``grace_s`` (messages of two topics may interleave), then again
after ``retry_s``, doubling up to ``retry_max_s``, at most ``max_requests`` times; after that its
numbers are logged as lost and settled so the tracker moves on. Requests are rate-limited to
``max_per_round`` per call of :meth:`GapTracker.due`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from common.backoff import doubling_delay_s

Range = tuple[int, int]
"""Inclusive range of sequence numbers."""


@dataclass(frozen=True, slots=True)
class ReplayPolicy:
    """When to ask for missing numbers, in loop-clock seconds.

    Attributes:
        grace_s: Wait this long after a gap appears before the first request, s.
        retry_s: First wait between requests for the same gap, s (doubles each time).
        retry_max_s: Longest wait between requests, s.
        max_requests: Requests per gap before its numbers are given up as lost.
        max_per_round: Requests sent per round at most (rate limit).
    """

    grace_s: float = 1.0
    retry_s: float = 5.0
    retry_max_s: float = 60.0
    max_requests: int = 8
    max_per_round: int = 20


@dataclass(slots=True)
class SeqState:
    """What a recorder has of one reactor's sequence numbers.

    Attributes:
        contiguous: Every number up to this one is settled.
        above: Sorted, disjoint, non-adjacent settled ranges above ``contiguous + 1``.
        announced: The highest number the controller says it has published (``last_seq`` of
            the retained state); anything above the settled numbers up to it is missing.
    """

    contiguous: int
    above: list[list[int]] = field(default_factory=list)
    announced: int = 0

    def settle(self, lo: int, hi: int) -> int:
        """Mark ``lo..hi`` settled; returns how many numbers were not settled before."""
        lo = max(lo, self.contiguous + 1)
        if lo > hi:
            return 0
        before = self._count()
        i = bisect.bisect_left(self.above, [lo])
        if i > 0 and self.above[i - 1][1] >= lo - 1:
            i -= 1
        j = i
        while j < len(self.above) and self.above[j][0] <= hi + 1:
            lo, hi = min(lo, self.above[j][0]), max(hi, self.above[j][1])
            j += 1
        self.above[i:j] = [[lo, hi]]
        if self.above[0][0] == self.contiguous + 1:
            self.contiguous = self.above.pop(0)[1]
        return self._count() - before

    def _count(self) -> int:
        return self.contiguous + sum(hi - lo + 1 for lo, hi in self.above)

    def missing(self) -> list[Range]:
        """The gaps below the highest settled number, and the tail up to ``announced``."""
        gaps, last = [], self.contiguous
        for lo, hi in self.above:
            gaps.append((last + 1, lo - 1))
            last = hi
        if self.announced > last:
            gaps.append((last + 1, self.announced))
        return gaps


@dataclass(slots=True)
class _Episode:
    """One gap as first detected (later sub-gaps of it share its request schedule)."""

    lo: int
    hi: int
    next_at: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A request for one range, as published on ``{root}/{site}/replay/request``."""

    reactor: str
    from_seq: int
    to_seq: int

    def payload(self) -> dict[str, int | str]:
        """The JSON object of docs/mqtt.md."""
        return {"v": 1, "reactor": self.reactor, "from_seq": self.from_seq, "to_seq": self.to_seq}


class GapTracker:
    """Gap detection for the reactors one recorder sees."""

    def __init__(
        self, states: dict[str, SeqState], policy: ReplayPolicy, backfill: bool = True
    ) -> None:
        self.states = states
        self.policy = policy
        self.backfill = backfill
        self.dirty: set[str] = set()
        """Reactors whose state changed since the spool last saved it."""
        self._episodes: dict[str, list[_Episode]] = {}

    def observe(self, reactor: str, seq: int) -> bool:
        """Note a received number; ``False`` for a duplicate (already settled)."""
        state = self.states.get(reactor)
        if state is None:
            # first sight of this reactor: with backfill, everything since 1 is asked for (the
            # controller's outbox still holds it); without, numbers before it are not
            start = 0 if self.backfill else seq - 1
            state = self.states[reactor] = SeqState(contiguous=start)
        self.dirty.add(reactor)
        return state.settle(seq, seq) > 0

    def announce(self, reactor: str, last_seq: int) -> bool:
        """Note the last number the controller has published; ``True`` if that is news.

        Numbers above what is settled, up to ``last_seq``, become a gap (a lost tail). On first
        sight of a reactor without backfill, the announced numbers start the count instead.
        """
        state = self.states.get(reactor)
        if state is None:
            start = 0 if self.backfill else last_seq
            state = self.states[reactor] = SeqState(contiguous=start)
            self.dirty.add(reactor)
        if last_seq <= state.announced:
            return False
        state.announced = last_seq
        self.dirty.add(reactor)
        return True

    def give_up(self, reactor: str, lo: int, hi: int) -> list[Range]:
        """Settle the missing numbers within ``lo..hi`` as lost (the controller no longer has them).

        Returns the ranges that were missing, ``[]`` when none was.
        """
        state = self.states.get(reactor)
        if state is None:
            return []
        lost = [(max(a, lo), min(b, hi)) for a, b in state.missing() if a <= hi and b >= lo]
        for a, b in lost:
            state.settle(a, b)
        if lost:
            self.dirty.add(reactor)
        return lost

    def missing(self) -> dict[str, list[Range]]:
        """Every reactor's gaps."""
        return {r: gaps for r, s in self.states.items() if (gaps := s.missing())}

    def due(self, now: float) -> tuple[list[ReplayRequest], dict[str, list[Range]]]:
        """Requests to send now, and the ranges given up as lost (already settled)."""
        requests: list[ReplayRequest] = []
        lost: dict[str, list[Range]] = {}
        budget = self.policy.max_per_round
        for reactor, state in self.states.items():
            gaps = state.missing()
            episodes = self._follow(reactor, gaps, now)
            for episode in episodes:
                if episode.next_at > now or budget <= 0:
                    continue
                inside = [g for g in gaps if episode.lo <= g[0] and g[1] <= episode.hi]
                if episode.attempts >= self.policy.max_requests:
                    for lo, hi in inside:
                        state.settle(lo, hi)
                    lost.setdefault(reactor, []).extend(inside)
                    self.dirty.add(reactor)
                    episode.next_at = float("inf")
                    continue
                for lo, hi in inside[:budget]:
                    requests.append(ReplayRequest(reactor, lo, hi))
                budget -= min(len(inside), budget)
                episode.attempts += 1
                wait = doubling_delay_s(
                    episode.attempts, self.policy.retry_s, self.policy.retry_max_s
                )
                episode.next_at = now + wait
        return requests, lost

    def _follow(self, reactor: str, gaps: list[Range], now: float) -> list[_Episode]:
        """Match current gaps to their episodes (gaps only shrink or split; new ones are above)."""
        known = self._episodes.get(reactor, [])
        alive = [e for e in known if any(e.lo <= g[0] and g[1] <= e.hi for g in gaps)]
        top = max((e.hi for e in alive), default=0)
        alive += [_Episode(lo, hi, now + self.policy.grace_s) for lo, hi in gaps if lo > top]
        self._episodes[reactor] = alive
        return alive
