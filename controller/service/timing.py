"""When each reactor's cycle runs, and how late it was: phases, lateness, overruns.

**Phases.** Every reactor cycles once per control period, but not all at the same instant: the
service gives each reactor a phase (one of :data:`PHASE_SLOTS` offsets inside the period,
:func:`spread_phases`) so that the site's instruments are asked a few at a time all through the
period instead of all at once. Reactors sharing a transport (a gateway port, a serial line) get
phases as far apart as the site allows, so their requests rarely meet on the wire.

**Lateness and overruns** (:class:`CycleTiming`), measured every cycle on the injected clock:

* *lateness* — from the cycle's scheduled instant (its tick) to the moment its outputs have been
  written: how late this cycle's control action reached the plant;
* *overrun* — a tick that passed while the reactor's previous cycle was still running (that cycle
  took more than a period): the tick is run late, or skipped when a whole period has gone by.

A cycle is *late* when its lateness exceeds ``SafetyLimits.cycle_late_ms``; a missed tick counts
as a late cycle. The count of late cycles among the last :data:`LATE_WINDOW_CYCLES` feeds the
``cycle_late`` alarm (controller/core/safety.py), whose delay keeps a single late cycle from
raising it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

LATE_WINDOW_CYCLES = 60
"""How many recent cycles the ``cycle_late`` alarm counts late ones among."""

PHASE_SLOTS = 50
"""Phases a period is cut into (20 ms apart at 1 s): reactors sharing a slot cycle together."""


def spread_phases(
    transports_of: Mapping[str, Iterable[str]], slots: int = PHASE_SLOTS
) -> dict[str, float]:
    """Each reactor's phase as a fraction of its control period (``0 <= phase < 1``).

    Reactors are grouped by the transports they use and dealt round-robin across the groups into
    ``slots`` phases: reactors on one gateway port sit ``1 / group size`` of a period apart (as
    far as the slots allow), and the reactors sharing a slot are on different transports. Sharing
    a slot lets one turn of the event loop and one journal transaction serve several reactors.

    Args:
        transports_of: Reactor id -> the buses and lines its devices hang on.
        slots: Distinct phases in a period.
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for rid, transports in transports_of.items():
        groups.setdefault(tuple(sorted(set(transports))), []).append(rid)
    order: list[str] = []
    members = list(groups.values())
    for rank in range(max((len(m) for m in members), default=0)):
        order += [m[rank] for m in members if rank < len(m)]
    count = len(order)
    return {rid: math.floor(i * slots / count) / slots for i, rid in enumerate(order)}


@dataclass(slots=True)
class CycleTiming:
    """Lateness and overruns of one reactor's cycles.

    Args:
        period_s: The control period, s (of the injected clock).
        late_limit_s: A cycle whose outputs are written later than this after its tick is late,
            wall-clock s.
        time_scale: Injected-clock seconds per wall second (1: real time; an accelerated
            simulated site runs faster). Lateness is the delay of real work — I/O, the event
            loop — so it is measured in wall seconds: 10 ms of Modbus at 60x speed is 10 ms late,
            not 600 ms.
    """

    period_s: float
    late_limit_s: float
    time_scale: float = 1.0
    lateness_s: float = 0.0
    """Lateness of the last cycle, wall-clock s."""
    overruns: int = 0
    """Ticks that passed while a previous cycle was still running, since the service started."""
    _recent: deque[bool] = field(default_factory=lambda: deque(maxlen=LATE_WINDOW_CYCLES))

    def outputs_written(self, scheduled_s: float, now_s: float) -> float:
        """The cycle scheduled at ``scheduled_s`` has written its outputs at ``now_s``.

        Returns:
            Its lateness, wall-clock s.
        """
        self.lateness_s = max(0.0, now_s - scheduled_s) / self.time_scale
        self._recent.append(self.lateness_s > self.late_limit_s)
        return self.lateness_s

    def next_tick(self, scheduled_s: float, now_s: float) -> float:
        """The tick to run next after the cycle scheduled at ``scheduled_s`` ended at ``now_s``.

        Every tick that passed while the cycle ran is an overrun (and a late cycle). The first of
        them runs at once, late; ticks a whole period in the past are skipped, so a slow cycle
        never makes the reactor cycle in a burst to catch up.
        """
        passed = max(0, math.floor((now_s - scheduled_s) / self.period_s + 1e-9))
        self.overruns += passed
        self._recent.extend([True] * min(passed, LATE_WINDOW_CYCLES))
        tick = scheduled_s + self.period_s
        while tick + self.period_s <= now_s:
            tick += self.period_s
        return tick

    @property
    def late_cycles(self) -> int:
        """Late or missed cycles among the last :data:`LATE_WINDOW_CYCLES`."""
        return sum(self._recent)
