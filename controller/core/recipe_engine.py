"""Recipe engine: phase sequencing, exposure clocks and harvests, on time given by the caller.

The engine is a plain object advanced once per control cycle with :meth:`RecipeEngine.step`; it
never reads a clock. It emits :class:`Event` records (phase changes, harvests, pump runs) that the
twin writes to its event log and the service will journal and publish.

Phase states follow ISA-88: running, held, complete, stopped, aborted. A held phase keeps its
targets and keeps counting exposure (the cells are still exposed: exposure is what the culture
saw, not what the recipe planned) but neither ends nor releases harvests until restarted. A harvest
whose exposure is reached during a hold is announced once (``harvest_waiting``) and released at
the restart; its record then carries ``due_exposure_s`` and ``overshoot_s`` (exposure beyond the
planned one), and a ``harvest_late`` notice goes with it (docs/recipes.md, "Holds").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from controller.core.exposure import ExposureClock, cells_stats
from controller.core.recipe import Harvest, HarvestAction, Phase, PhaseEnd, Recipe


class PhaseState(StrEnum):
    """ISA-88 phase states used by the engine."""

    RUNNING = "running"
    HELD = "held"
    COMPLETE = "complete"
    STOPPED = "stopped"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at simulated or real time ``t_s`` (s since run start)."""

    t_s: float
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Measured:
    """Trusted values for one cycle, in recipe units; ``None`` when untrusted or absent."""

    o2_pct: float | None = None
    co2_pct: float | None = None
    temp_c: float | None = None
    do_pct: float | None = None
    cells_o2_pct: float | None = None
    """Estimated pericellular O2, %-equivalent (controller/core/pericellular.py), if tracked."""


@dataclass(slots=True)
class HarvestRecord:
    """Outcome of one harvest (what ``summary.json`` reports)."""

    name: str
    phase: str
    at_s: float
    exposure_s: float
    action: str
    forced_by_latest: bool
    stats: dict[str, Any]
    done_s: float | None = None
    due_exposure_s: float | None = None

    @property
    def overshoot_s(self) -> float:
        """Exposure beyond the planned one at release, s (a harvest held back by a hold)."""
        if self.due_exposure_s is None:
            return 0.0
        return max(0.0, self.exposure_s - self.due_exposure_s)

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for JSON."""
        return {
            "name": self.name,
            "phase": self.phase,
            "at_s": self.at_s,
            "exposure_s": self.exposure_s,
            "action": self.action,
            "forced_by_latest": self.forced_by_latest,
            **self.stats,
            "done_s": self.done_s,
            "due_exposure_s": self.due_exposure_s,
            "overshoot_s": self.overshoot_s,
        }


LATE_NOTICE_S = 1.0
"""A harvest released this much past its planned exposure (s) gets a ``harvest_late`` notice."""

IN_SPEC_DWELL_S = 60.0
"""How long every controlled variable must stay in band before an ``in_spec`` phase ends, s."""


class RecipeEngine:
    """Runs a :class:`Recipe` phase by phase.

    Args:
        recipe: The validated recipe.
        excursion_debounce_s: Shortest out-of-band stay counted as an excursion, s.
        track_cells: Keep a second exposure clock per gas-basis O2 phase, driven by
            ``Measured.cells_o2_pct`` (the pericellular estimate) under the same rules; each
            harvest's statistics then carry the cells side too (``cells_*`` keys,
            :data:`controller.core.exposure.CELLS_KEYS`).
    """

    def __init__(
        self, recipe: Recipe, excursion_debounce_s: float = 10.0, *, track_cells: bool = False
    ) -> None:
        self.recipe = recipe
        self.debounce_s = excursion_debounce_s
        self.track_cells = track_cells
        self.cells_clock: ExposureClock | None = None
        self.index = -1
        self.state = PhaseState.RUNNING
        self.phase_start_s = 0.0
        self.clock: ExposureClock | None = None
        self.next_harvest = 0
        self.harvests: list[HarvestRecord] = []
        self.pending: dict[str, HarvestRecord] = {}
        self.waiting: set[str] = set()
        """Harvests announced as waiting for the restart of a held phase."""
        self.pump_until_s: float | None = None
        self._in_spec_since: float | None = None
        self.finished = False

    @property
    def phase(self) -> Phase | None:
        """The current phase, or ``None`` before the start and after the end."""
        if 0 <= self.index < len(self.recipe.phases) and not self.finished:
            return self.recipe.phases[self.index]
        return None

    @property
    def pump_on(self) -> bool:
        """True while a harvest pump run is in progress."""
        return self.pump_until_s is not None

    def start(self, now_s: float) -> list[Event]:
        """Begin the first phase."""
        return [Event(now_s, "run_start", {"recipe": self.recipe.name}), *self._enter(0, now_s)]

    def _enter(self, index: int, now_s: float) -> list[Event]:
        self.index = index
        self.phase_start_s = now_s
        self.next_harvest = 0
        self._in_spec_since = None
        self.state = PhaseState.RUNNING
        if index >= len(self.recipe.phases):
            self.finished = True
            self.state = PhaseState.COMPLETE
            return [Event(now_s, "run_complete", {})]
        phase = self.recipe.phases[index]
        self.clock = None
        self.cells_clock = None
        if phase.o2_pct is not None:
            self.clock = ExposureClock(phase.o2_pct, phase.o2_band_pct, self.debounce_s)
            if self.track_cells and phase.o2_basis == "gas":
                self.cells_clock = ExposureClock(phase.o2_pct, phase.o2_band_pct, self.debounce_s)
        return [
            Event(
                now_s,
                "phase_start",
                {
                    "phase": phase.name,
                    "index": index,
                    "o2_pct": phase.o2_pct,
                    "co2_pct": phase.co2_pct,
                    "temp_c": phase.temp_c,
                },
            )
        ]

    def step(self, now_s: float, dt_s: float, measured: Measured) -> list[Event]:
        """Account the cycle ending at ``now_s``; return what happened."""
        events: list[Event] = []
        if self.pump_until_s is not None and now_s >= self.pump_until_s - 1e-9:
            self.pump_until_s = None
            events.append(Event(now_s, "pump_stop", {}))
            events.extend(self._finish_pumped(now_s))
        phase = self.phase
        if phase is None:
            return events
        value = measured.do_pct if phase.o2_basis == "dissolved" else measured.o2_pct
        in_band = self.clock.sample(now_s, dt_s, value) if self.clock else True
        if self.cells_clock is not None:
            self.cells_clock.sample(now_s, dt_s, measured.cells_o2_pct)
        if self.state is PhaseState.HELD:
            events.extend(self._harvests_waiting(now_s, phase))
        if self.state is not PhaseState.RUNNING:
            return events
        events.extend(self._harvests_due(now_s, phase))
        if self._phase_done(now_s, phase, measured, in_band, events):
            events.append(
                Event(
                    now_s,
                    "phase_end",
                    {
                        "phase": phase.name,
                        "exposure_s": self.clock.exposure_s if self.clock else 0.0,
                        "elapsed_s": now_s - self.phase_start_s,
                    },
                )
            )
            events.extend(self._enter(self.index + 1, now_s))
        return events

    def _harvests_waiting(self, now_s: float, phase: Phase) -> list[Event]:
        """Announce, once each, harvests whose exposure is reached while the phase is held."""
        events: list[Event] = []
        clock = self.clock
        for harvest in phase.harvests[self.next_harvest :]:
            if clock is None or clock.exposure_s < harvest.at_exposure_h * 3600.0 - 1e-6:
                break
            if harvest.name in self.waiting:
                continue
            self.waiting.add(harvest.name)
            detail = {
                "harvest": harvest.name,
                "phase": phase.name,
                "exposure_s": clock.exposure_s,
                "due_exposure_s": harvest.at_exposure_h * 3600.0,
                "why": "the phase is held: released when it is restarted",
            }
            events.append(Event(now_s, "harvest_waiting", detail))
        return events

    def _harvests_due(self, now_s: float, phase: Phase) -> list[Event]:
        events: list[Event] = []
        clock = self.clock
        while clock is not None and self.next_harvest < len(phase.harvests):
            harvest = phase.harvests[self.next_harvest]
            reached = clock.exposure_s >= harvest.at_exposure_h * 3600.0 - 1e-6
            late = (
                harvest.latest_h is not None
                and now_s - self.phase_start_s >= harvest.latest_h * 3600.0 - 1e-6
            )
            if not (reached or late):
                break
            self.next_harvest += 1
            events.extend(self._release(now_s, phase, harvest, clock, forced=late and not reached))
        return events

    def _release(
        self, now_s: float, phase: Phase, harvest: Harvest, clock: ExposureClock, forced: bool
    ) -> list[Event]:
        stats = clock.cut(now_s)
        if self.cells_clock is not None:
            stats.update(cells_stats(self.cells_clock.cut(now_s)))
        record = HarvestRecord(
            harvest.name,
            phase.name,
            now_s,
            clock.exposure_s,
            harvest.action.value,
            forced,
            stats,
            due_exposure_s=harvest.at_exposure_h * 3600.0,
        )
        self.harvests.append(record)
        self.pending[harvest.name] = record
        events = [Event(now_s, "harvest_due", record.as_dict())]
        if harvest.name in self.waiting or record.overshoot_s > LATE_NOTICE_S:
            self.waiting.discard(harvest.name)
            late = {
                "harvest": harvest.name,
                "exposure_s": record.exposure_s,
                "due_exposure_s": record.due_exposure_s,
                "overshoot_s": record.overshoot_s,
            }
            events.append(Event(now_s, "harvest_late", late))
        if harvest.action is HarvestAction.PUMP:
            self.pump_until_s = now_s + harvest.pump_duration_s
            events.append(
                Event(
                    now_s,
                    "pump_start",
                    {
                        "harvest": harvest.name,
                        "volume_ml": harvest.volume_ml,
                        "flow_ml_per_min": harvest.flow_ml_per_min,
                    },
                )
            )
        return events

    def _finish_pumped(self, now_s: float) -> list[Event]:
        events = []
        for name, record in list(self.pending.items()):
            if record.action == HarvestAction.PUMP.value:
                events.extend(self.confirm_harvest(name, now_s, by="pump"))
        return events

    def confirm_harvest(
        self, name: str, now_s: float, by: str, volume_ml: float | None = None, container: str = ""
    ) -> list[Event]:
        """Mark a released harvest as collected; a duplicate or unknown name changes nothing."""
        record = self.pending.pop(name, None)
        if record is None:  # already confirmed (a duplicate), or never released
            return []
        record.done_s = now_s
        return [
            Event(
                now_s,
                "harvest_done",
                {"harvest": name, "by": by, "volume_ml": volume_ml, "container": container},
            )
        ]

    def _phase_done(
        self, now_s: float, phase: Phase, measured: Measured, in_band: bool, events: list[Event]
    ) -> bool:
        elapsed = now_s - self.phase_start_s
        limit_s = phase.duration_h * 3600.0
        if phase.until is PhaseEnd.TIME:
            return elapsed >= limit_s - 1e-6
        if phase.until is PhaseEnd.EXPOSURE:
            return self._exposure_done(now_s, phase, elapsed, events)
        all_in = (
            in_band
            and _within(measured.co2_pct, phase.co2_pct, phase.co2_band_pct)
            and _within(measured.temp_c, phase.temp_c, phase.temp_band_c)
        )
        if not all_in:
            self._in_spec_since = None
        elif self._in_spec_since is None:
            self._in_spec_since = now_s
        if self._in_spec_since is not None and now_s - self._in_spec_since >= IN_SPEC_DWELL_S:
            return True
        if elapsed >= limit_s - 1e-6:
            events.append(Event(now_s, "phase_timeout", {"phase": phase.name}))
            return True
        return False

    def _exposure_done(
        self, now_s: float, phase: Phase, elapsed_s: float, events: list[Event]
    ) -> bool:
        exposure_s = self.clock.exposure_s if self.clock is not None else 0.0
        if exposure_s >= phase.duration_h * 3600.0 - 1e-6:
            return True
        cap = phase.max_duration_h
        if cap is not None and elapsed_s >= cap * 3600.0 - 1e-6:
            events.append(
                Event(now_s, "phase_timeout", {"phase": phase.name, "exposure_s": exposure_s})
            )
            return True
        return False

    # ------------------------------------------------------------------------ journal state
    def snapshot(self) -> dict[str, Any]:
        """Plain-data state: restoring it resumes the same phase, clock and harvest schedule."""
        return {
            "index": self.index,
            "state": self.state.value,
            "phase_start_s": self.phase_start_s,
            "next_harvest": self.next_harvest,
            "pump_until_s": self.pump_until_s,
            "in_spec_since": self._in_spec_since,
            "finished": self.finished,
            "clock": self.clock.snapshot() if self.clock is not None else None,
            "track_cells": self.track_cells,
            "cells_clock": self.cells_clock.snapshot() if self.cells_clock is not None else None,
            "harvests": [asdict(h) for h in self.harvests],
            "pending": sorted(self.pending),
            "waiting": sorted(self.waiting),
        }

    @classmethod
    def restore(
        cls, recipe: Recipe, data: dict[str, Any], excursion_debounce_s: float = 10.0
    ) -> RecipeEngine:
        """Rebuild an engine from :meth:`snapshot` (same recipe)."""
        engine = cls(recipe, excursion_debounce_s, track_cells=bool(data.get("track_cells")))
        engine.index = int(data["index"])
        engine.state = PhaseState(data["state"])
        engine.phase_start_s = float(data["phase_start_s"])
        engine.next_harvest = int(data["next_harvest"])
        engine.pump_until_s = data["pump_until_s"]
        engine._in_spec_since = data["in_spec_since"]
        engine.finished = bool(data["finished"])
        clock = data["clock"]
        engine.clock = ExposureClock.restore(clock) if clock is not None else None
        cells = data.get("cells_clock")
        engine.cells_clock = ExposureClock.restore(cells) if cells is not None else None
        engine.harvests = [HarvestRecord(**h) for h in data["harvests"]]
        by_name = {h.name: h for h in engine.harvests}
        engine.pending = {name: by_name[name] for name in data["pending"]}
        engine.waiting = set(data.get("waiting", []))
        return engine

    # ------------------------------------------------------------------ operator state changes
    def hold(self, now_s: float) -> list[Event]:
        """Hold the running phase (targets kept, no phase end, no harvests released)."""
        self.state = PhaseState.HELD
        return [Event(now_s, "phase_held", {"phase": self.phase.name if self.phase else None})]

    def end(self, now_s: float, state: PhaseState, reason: str = "") -> list[Event]:
        """Stop or abort the run (``state`` is STOPPED or ABORTED); an ended run stays ended."""
        if self.state in (PhaseState.STOPPED, PhaseState.ABORTED, PhaseState.COMPLETE):
            return []
        self.state = state
        name = self.phase.name if self.phase else None
        return [Event(now_s, f"run_{state.value}", {"phase": name, "reason": reason})]

    def restart(self, now_s: float) -> list[Event]:
        """Resume a held phase."""
        self.state = PhaseState.RUNNING
        return [Event(now_s, "phase_restarted", {"phase": self.phase.name if self.phase else None})]


def _within(value: float | None, target: float | None, band: float) -> bool:
    if target is None:
        return True
    return value is not None and abs(value - target) <= band + 1e-9
