"""Telemetry shaping: what one cycle shows (snapshot) and the MQTT messages it leaves.

:class:`TelemetryShaper` numbers a reactor's messages (one sequence per reactor, so a gap is
detectable), turns a cycle's events and snapshot into outbox messages (docs/mqtt.md) and tracks
when the retained ``state`` message has changed. It holds no control state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.core.alarms import AlarmSet
from controller.core.recipe import Phase
from controller.core.recipe_engine import Event, RecipeEngine
from controller.service.journal import OutboxMessage
from drivers.reading import Reading
from telemetry.messages import dumps, event_message, state_message, telemetry_message
from telemetry.topics import Topics


@dataclass(slots=True)
class Snapshot:
    """The last cycle, for the operator page, ``hypoxia ctl status`` and telemetry."""

    run_t_s: float = 0.0
    utc: str = ""
    phase: str | None = None
    phase_state: str = ""
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    actuation: dict[str, float | bool] = field(default_factory=dict)
    exposure_s: float = 0.0
    harvests: list[dict[str, Any]] = field(default_factory=list)
    lateness_ms: float = 0.0
    """How late the cycle's outputs were written after its tick, ms (service/timing.py)."""
    overruns: int = 0
    """Ticks that passed while a cycle of this reactor was still running, since the start."""
    pericellular_o2_pct: float | None = None
    """Estimated O2 at the cells, %-equivalent (``[reactors.culture]``; None without one)."""


def reading_dict(reading: Reading) -> dict[str, Any]:
    """A reading as JSON-ready fields (NaN becomes ``None``)."""
    return {
        "value": None if math.isnan(reading.value) else reading.value,
        "unit": reading.unit,
        "quality": reading.quality.value,
        "reason": reading.reason,
    }


def visible_alarms(alarms: AlarmSet) -> dict[str, str]:
    """Alarm name -> ISA-18.2 state, for every alarm not normal or suppressed."""
    return {
        n: a.state.value
        for n, a in alarms.alarms.items()
        if a.state.value not in ("normal", "suppressed")
    }


class TelemetryShaper:
    """Sequence numbers, outbox messages and retained-state tracking of one reactor.

    Args:
        reactor: Reactor id.
        topics: Topic names of the site; ``None``: no MQTT (no messages are built).
        first_seq: The next sequence number (from the journal, so a restart continues it).
    """

    def __init__(self, reactor: str, topics: Topics | None, first_seq: int) -> None:
        self.reactor = reactor
        self.topics = topics
        self.seq = first_seq
        self.state_version = 0
        self._state_key: tuple[Any, ...] | None = None
        self._events_shaped = False

    def outbox(
        self,
        utc: datetime,
        run_id: str | None,
        events: list[Event],
        phase: Phase | None,
        snapshot: Snapshot | None,
        alarms_active: int,
    ) -> list[OutboxMessage]:
        """A cycle's messages with fresh sequence numbers: events, then telemetry (if given)."""
        topics, rid = self.topics, self.reactor
        if topics is None:
            return []
        out: list[OutboxMessage] = []
        self._events_shaped = self._events_shaped or bool(events)
        for ev in events:
            msg = event_message(topics.site, rid, self.seq, utc, run_id, ev)
            out.append(OutboxMessage(rid, self.seq, topics.event(rid), dumps(msg)))
            self.seq += 1
        if snapshot is not None:
            s = snapshot
            msg = telemetry_message(
                topics.site,
                rid,
                self.seq,
                utc,
                run_id,
                phase,
                s.phase_state,
                s.run_t_s,
                s.exposure_s,
                s.readings,
                s.actuation,
                alarms_active,
                lateness_ms=s.lateness_ms,
                overruns=s.overruns,
                pericellular_o2_pct=s.pericellular_o2_pct,
            )
            out.append(OutboxMessage(rid, self.seq, topics.telemetry(rid), dumps(msg)))
            self.seq += 1
        return out

    def state_message(
        self,
        utc: datetime,
        run_id: str | None,
        phase: Phase | None,
        engine: RecipeEngine | None,
        alarms: AlarmSet,
    ) -> dict[str, Any]:
        """The retained ``state`` message of this reactor now (``last_seq``: the outbox's last)."""
        return state_message(
            self.topics.site if self.topics else "",
            self.reactor,
            utc,
            run_id,
            phase,
            engine.state.value if engine else "",
            visible_alarms(alarms),
            sorted(engine.pending) if engine else [],
            last_seq=self.last_seq,
        )

    @property
    def last_seq(self) -> int:
        """The highest sequence number put in the outbox (0: none yet)."""
        return self.seq - 1

    def track(self, phase: Phase | None, engine: RecipeEngine | None, alarms: AlarmSet) -> None:
        """Bump ``state_version`` when what the retained state shows has changed.

        Any event since the last call bumps it too, so the state (and its ``last_seq``) is
        published again after the messages that matter most: a run's last events
        (``run_complete``, harvests) can never be the unseen tail of the stream.
        """
        key = (
            engine.index if engine else None,
            engine.state.value if engine else None,
            phase.o2_pct if phase else None,
            phase.co2_pct if phase else None,
            phase.temp_c if phase else None,
            tuple(sorted(visible_alarms(alarms).items())),
            tuple(sorted(engine.pending)) if engine else (),
        )
        if key != self._state_key or self._events_shaped:
            self._state_key = key
            self._events_shaped = False
            self.state_version += 1
