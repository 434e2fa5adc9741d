"""The control service: one asyncio task per reactor, crash resume from the run journal.

Each reactor runs a fixed read -> check -> control -> actuate -> record cycle over its drivers.

Isolation: every device call has a deadline inside the cycle and never raises into the cycle; a
silent instrument turns into an untrusted reading for its own reactor only. A watchdog per reactor
puts every actuator in its safe state (mixers closed, heater off) if the cycle stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.alarms import AlarmSet
from controller.audit import AuditTrail
from controller.clock import CycleClock
from controller.journal import OutboxMessage, RunJournal, RunRecord
from controller.loops import LoopMode
from controller.reactor import Actuation, ReactorController
from controller.recipe import Phase, Recipe, check_feasible
from controller.recipe_engine import Event, Measured, PhaseState, RecipeEngine
from controller.safety import CycleView, Interlocks, alarm_conditions, build_alarms
from controller.site import ReactorConfig
from controller.telemetry import Topics, dumps, event_message, state_message, telemetry_message
from drivers.catalog import RoleSet
from drivers.reading import Reading

log = logging.getLogger(__name__)

MIXER_OF = {
    "n2_lpm": "n2_mixer",
    "air_lpm": "air_mixer",
    "o2_lpm": "o2_mixer",
    "co2_lpm": "co2_mixer",
}


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


def _reading_dict(reading: Reading) -> dict[str, Any]:
    return {
        "value": None if math.isnan(reading.value) else reading.value,
        "unit": reading.unit,
        "quality": reading.quality.value,
        "reason": reading.reason,
    }


class ReactorRunner:
    """Runs one reactor's active run until it completes, is stopped or aborted.

    Args:
        config: The reactor's site configuration.
        roles: Its instruments by role.
        journal: The site's run journal.
        audit: The site's audit trail.
        clock: Injected time.
        topics: MQTT topic names of the site (messages go to the outbox; None: no MQTT).
        notify: Called after every cycle (wakes the MQTT link).
    """

    def __init__(
        self,
        config: ReactorConfig,
        roles: RoleSet,
        journal: RunJournal,
        audit: AuditTrail,
        clock: CycleClock,
        topics: Topics | None = None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.roles = roles
        self.journal = journal
        self.audit = audit
        self.clock = clock
        self.topics = topics
        self.notify = notify
        self.seq = journal.next_seq(config.id)
        self.state_version = 0
        self._state_key: tuple[Any, ...] | None = None
        self.period_s = config.process.control_period_s
        self.controller = ReactorController(config.process, config.tuning)
        self.alarms: AlarmSet = build_alarms(config.limits)
        self.interlocks = Interlocks(config.limits)
        self.engine: RecipeEngine | None = None
        self.recipe: Recipe | None = None
        self.run: RunRecord | None = None
        self.snapshot = Snapshot()
        self.overrides: dict[str, float] = {}
        self.data_gap_s = 0.0
        self.heartbeat = 0.0
        self.safe_state = False
        self.commands: asyncio.Queue[Callable[[], list[Event]]] = asyncio.Queue()
        self._last_act: Actuation | None = None
        self._written: dict[str, float] = {}  # role -> value the device last confirmed
        self.finished = False  # the cycle task has ended: no command can act any more
        # which variables have been in band since their last set-point change (before that, a
        # difference is the planned approach, not a deviation)
        self._reached: dict[str, bool] = {"o2": False, "co2": False, "temp": False}
        self._purge_started: tuple[float, float] | None = None

    # ------------------------------------------------------------------------- start / resume
    def start(self, recipe: Recipe, recipe_toml: str, sha256: str) -> str:
        """Start a new run of ``recipe``; raises ``ConfigError`` if the vessel cannot do it."""
        check_feasible(recipe, self.config.process, "recipe", self.config.id)
        now = self.clock.utc()
        run_id = self.journal.start_run(self.config.id, recipe.name, sha256, recipe_toml, now)
        self.run = self.journal.run(run_id)
        self.recipe = recipe
        self.engine = RecipeEngine(recipe)
        events = self.engine.start(0.0)
        self.controller.apply_phase(self.phase)
        self.journal.commit_cycle(
            run_id,
            now,
            0.0,
            self.engine.snapshot(),
            self._controller_state(),
            events,
            self._outbox(now, events, telemetry=False),
        )
        self.audit.append(
            now,
            "system",
            "service",
            "run_start",
            self.config.id,
            None,
            {"run_id": run_id, "recipe": recipe.name, "sha256": sha256},
        )
        return run_id

    def resume(self, run: RunRecord, recipe: Recipe) -> list[Event]:
        """Resume ``run`` from its last checkpoint under the reactor's restart policy."""
        ckpt = self.journal.checkpoint(run.run_id)
        if ckpt is None:
            msg = f"run {run.run_id} has no checkpoint to resume from"
            raise RuntimeError(msg)
        self.run, self.recipe = run, recipe
        self.engine = RecipeEngine.restore(recipe, ckpt.engine)
        state = ckpt.controller
        self.controller.apply_phase(self.phase)
        self.controller.restore(state["controller"])
        self.alarms.restore(state.get("alarms", {}))
        self.overrides = dict(state.get("overrides", {}))
        now = self.clock.utc()
        self.data_gap_s = max(0.0, (now - ckpt.utc).total_seconds())
        self.journal.record_outage(run.run_id, ckpt.utc, now)
        policy = self.config.restart
        t = self.run_t_s()
        events = [
            Event(
                t,
                "run_resumed",
                {
                    "run_id": run.run_id,
                    "policy": policy,
                    "outage_s": self.data_gap_s,
                    "last_checkpoint_t_s": ckpt.run_t_s,
                    "phase": self.engine.phase.name if self.engine.phase else None,
                    "exposure_s": self.engine.clock.exposure_s if self.engine.clock else 0.0,
                },
            )
        ]
        if policy in ("hold", "safe") and self.engine.state is PhaseState.RUNNING:
            events += self.engine.hold(t)
        self.safe_state = policy == "safe"
        self.audit.append(
            now,
            "system",
            "service",
            "run_resume",
            self.config.id,
            None,
            {"run_id": run.run_id, "policy": policy, "outage_s": self.data_gap_s},
        )
        return events

    def setpoint_changed(self) -> None:
        """A set point moved: the approach to it is planned, not a deviation."""
        self._reached = dict.fromkeys(self._reached, False)

    @property
    def phase(self) -> Phase | None:
        """The current phase with operator set-point overrides applied."""
        phase = self.engine.phase if self.engine else None
        if phase is None or not self.overrides:
            return phase
        return phase.model_copy(update=self.overrides)

    def run_t_s(self) -> float:
        """Seconds since the run started (simulated UTC, so outages count)."""
        if self.run is None:
            return 0.0
        return (self.clock.utc() - self.run.started_utc).total_seconds()

    def _controller_state(self) -> dict[str, Any]:
        return {
            "controller": self.controller.snapshot(),
            "alarms": self.alarms.snapshot(),
            "overrides": self.overrides,
            "wall_utc": self.clock.wall_utc().isoformat(),
        }

    # ------------------------------------------------------------------------------ the cycle
    async def run_forever(self, initial_events: list[Event] | None = None) -> str:
        """Cycle until the run ends; return its final status.

        An unexpected error ends the cycle loop in a known state: it is logged, every actuator is
        put in its safe state and the status is ``failed``.
        """
        pending = list(initial_events or [])
        next_tick = self.clock.monotonic()
        try:
            while True:
                await self.clock.sleep_until(next_tick)
                next_tick += self.period_s
                while not self.commands.empty():
                    pending += self.apply_command(self.commands.get_nowait())
                status = await self.cycle(pending)
                pending = []
                if status != "active":
                    return status
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reactor %s: control cycle failed; outputs to safe state", self.config.id)
            await self.safe_outputs()
            return "failed"
        finally:
            self.finished = True

    def apply_command(self, change: Callable[[], list[Event]]) -> list[Event]:
        """Apply one queued command change; a failure is an event, never a dead cycle."""
        try:
            return change()
        except Exception as exc:
            log.exception("reactor %s: command change failed", self.config.id)
            return [Event(self.run_t_s(), "command_failed", {"error": repr(exc)})]

    async def cycle(self, events: list[Event]) -> str:
        """One read -> check -> control -> actuate -> record cycle; return the run status."""
        engine, run = self.engine, self.run
        if engine is None or run is None:
            return "idle"
        readings = await self._read_all()
        read_utc = self.clock.utc()
        trusted = {role: (r.value if r.trusted else None) for role, r in readings.items()}
        measured = Measured(
            o2_pct=trusted.get("o2"),
            co2_pct=trusted.get("co2"),
            temp_c=trusted.get("temperature"),
            do_pct=trusted.get("do"),
        )
        t = self.run_t_s()
        index = engine.index
        events += engine.step(t, self.period_s, measured)
        if engine.index != index:
            self.overrides = {}
            self.controller.apply_phase(self.phase)
            self._reached = dict.fromkeys(self._reached, False)
        act = self.controller.step(self.period_s, measured, engine.pump_on)
        view = self._view(t, measured, readings)
        act, lock_events = self.interlocks.apply(view, act)
        events += lock_events
        if self.safe_state:  # restart policy "safe": outputs off until an operator restarts
            act = Actuation(0.0, 0.0, 0.0, 0.0, 0.0, False)
        events += await self._actuate(t, act)
        events += self.alarms.update(t, alarm_conditions(view, self.config.limits, self.alarms))
        self.data_gap_s = 0.0
        self._record(t, readings, act, engine)
        self.journal.commit_cycle(
            run.run_id,
            self.clock.utc(),
            t,
            engine.snapshot(),
            self._controller_state(),
            events,
            self._outbox(read_utc, events, telemetry=True),
        )
        self._track_state()
        if self.notify is not None:
            self.notify()
        self.heartbeat = self.clock.monotonic()
        if engine.finished:
            self.journal.finish_run(run.run_id, "complete", self.clock.utc())
            await self.safe_outputs()
            return "complete"
        if engine.state in (PhaseState.STOPPED, PhaseState.ABORTED):
            self.journal.finish_run(run.run_id, engine.state.value, self.clock.utc())
            await self.safe_outputs()
            return engine.state.value
        return "active"

    async def _read_all(self) -> dict[str, Reading]:
        """Every sensor role, plus each mixer's measured flow as ``<role>_flow``."""
        sources = dict(self.roles.readers)
        sources.update(
            {f"{role}_flow": mixer.read_flow_lpm for role, mixer in self.roles.mixers.items()}
        )
        names = sorted(sources)
        results = await asyncio.gather(*(self._read(sources[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _read(self, read: Callable[[], Awaitable[Reading]]) -> Reading:
        deadline = 0.8 * self.period_s
        try:
            return await asyncio.wait_for(read(), timeout=deadline)
        except Exception as exc:  # a faulty instrument degrades its own reading only
            reason = "no answer within the cycle" if isinstance(exc, TimeoutError) else repr(exc)
            return Reading.bad("", reason, self.clock.monotonic(), self.clock.utc())

    def _view(self, t: float, m: Measured, readings: dict[str, Reading]) -> CycleView:
        ctl, engine = self.controller, self.engine
        phase = self.phase
        if phase is not None:
            for key, value, target, band in (
                ("o2", m.o2_pct, phase.o2_pct, phase.o2_band_pct),
                ("co2", m.co2_pct, phase.co2_pct, phase.co2_band_pct),
                ("temp", m.temp_c, phase.temp_c, phase.temp_band_c),
            ):
                if value is not None and target is not None and abs(value - target) <= band:
                    self._reached[key] = True
        secondary = readings.get("o2_secondary")
        o2 = readings.get("o2")
        expected = None
        if ctl.o2.mode is LoopMode.PURGE_DOWN and m.o2_pct is not None:
            if self._purge_started is None:
                self._purge_started = (t, m.o2_pct)
            expected = self._purge_expectation(t)
        else:
            self._purge_started = None
        pending = {name: rec.at_s for name, rec in engine.pending.items()} if engine else {}
        n2_flow = readings.get("n2_mixer_flow")
        return CycleView(
            now_s=t,
            phase=self.phase,
            o2_pct=m.o2_pct,
            co2_pct=m.co2_pct,
            temp_c=m.temp_c,
            o2_mode=ctl.o2.mode,
            o2_settled=self._reached["o2"],
            co2_settled=self._reached["co2"],
            temp_settled=self._reached["temp"],
            o2_secondary_pct=secondary.value if secondary and secondary.trusted else None,
            o2_quality_reason=o2.reason if o2 else "no O2 sensor",
            n2_set_lpm=self._last_act.n2_lpm if self._last_act else 0.0,
            n2_actual_lpm=n2_flow.value if n2_flow is not None and n2_flow.trusted else None,
            purge_expected_pct=expected,
            pending_harvests=pending,
            data_gap_s=self.data_gap_s,
        )

    def _purge_expectation(self, t: float) -> float | None:
        """Where O2 should be after purging this long at full N2, %.

        Allows the loop's delay and assumes only half the N2 flow, so only a clear supply failure
        (not a tuning error) raises the gas-supply alarm.
        """
        if self._purge_started is None:
            return None
        t0, x0 = self._purge_started
        elapsed = t - t0 - self.controller.o2.dead_time_s
        if elapsed < self.config.limits.supply_check_s:
            return None
        p = self.config.process
        tau_s = 60.0 * p.volume_l / (0.5 * p.n2_max_lpm + p.leak_lpm)
        return x0 * math.exp(-elapsed / tau_s)

    async def _actuate(self, t: float, act: Actuation) -> list[Event]:
        """Write what changed since the last *verified* write; a failed write is retried.

        ``_written`` holds, per actuator, the value the device confirmed; a write that fails (or
        a safe-state sweep) forgets it, so the next cycle writes again even if the request has not
        changed. An interlock can therefore never be defeated by one lost write.
        """
        events: list[Event] = []
        for attr, role in MIXER_OF.items():
            mixer = self.roles.mixers.get(role)
            value = float(getattr(act, attr))
            if mixer is None or _same(self._written.get(role), value):
                continue
            events += await self._write(t, role, mixer.set_flow_lpm(value), value)
        if self.roles.heater is not None:  # rewritten every cycle: the power stage may time out
            events += await self._write(t, "heater", self.roles.heater(act.heater_w), act.heater_w)
        pump = self.roles.pump
        if pump is not None and not _same(self._written.get("harvest_pump"), float(act.pump_on)):
            events += await self._write(
                t, "harvest_pump", pump.set(act.pump_on), float(act.pump_on)
            )
        self._last_act = act
        return events

    async def _write(
        self, t: float, role: str, write: Awaitable[None], value: float
    ) -> list[Event]:
        try:
            await asyncio.wait_for(write, timeout=0.8 * self.period_s)
        except Exception as exc:  # verified write failed: alarm path, retried next cycle
            self._written.pop(role, None)
            return [Event(t, "actuator_fault", {"role": role, "error": repr(exc)})]
        self._written[role] = value
        return []

    async def safe_outputs(self) -> None:
        """Every actuator to its safe state: mixers at zero, heater off, pump off.

        Forgets what was written, so the next cycle (if any) rewrites every output.
        """
        self._written.clear()
        for mixer in self.roles.mixers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(mixer.set_flow_lpm(0.0), timeout=self.period_s)
        if self.roles.heater is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.heater(0.0), timeout=self.period_s)
        if self.roles.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.pump.set(False), timeout=self.period_s)
        self._written.clear()
        self._last_act = Actuation(0.0, 0.0, 0.0, 0.0, 0.0, False)

    def _record(
        self, t: float, readings: dict[str, Reading], act: Actuation, engine: RecipeEngine
    ) -> None:
        phase = engine.phase
        self.snapshot = Snapshot(
            run_t_s=t,
            utc=self.clock.utc().isoformat(),
            phase=phase.name if phase else None,
            phase_state=engine.state.value,
            readings={role: _reading_dict(r) for role, r in readings.items()},
            actuation={
                "n2_lpm": act.n2_lpm,
                "air_lpm": act.air_lpm,
                "o2_lpm": act.o2_lpm,
                "co2_lpm": act.co2_lpm,
                "heater_w": act.heater_w,
                "pump_on": act.pump_on,
            },
            exposure_s=engine.clock.exposure_s if engine.clock else 0.0,
            harvests=[h.as_dict() for h in engine.harvests],
        )

    def _outbox(
        self, utc: datetime, events: list[Event], *, telemetry: bool
    ) -> list[OutboxMessage]:
        """This cycle's MQTT messages with fresh sequence numbers (events, then telemetry)."""
        if self.topics is None:
            return []
        rid, run_id = self.config.id, self.run.run_id if self.run else None
        out: list[OutboxMessage] = []
        for ev in events:
            msg = event_message(self.topics.site, rid, self.seq, utc, run_id, ev)
            out.append(OutboxMessage(rid, self.seq, self.topics.event(rid), dumps(msg)))
            self.seq += 1
        if telemetry:
            s = self.snapshot
            active = sum(1 for a in self.alarms.alarms.values() if a.active)
            msg = telemetry_message(
                self.topics.site,
                rid,
                self.seq,
                utc,
                run_id,
                self.phase,
                s.phase_state,
                s.run_t_s,
                s.exposure_s,
                s.readings,
                s.actuation,
                active,
            )
            out.append(OutboxMessage(rid, self.seq, self.topics.telemetry(rid), dumps(msg)))
            self.seq += 1
        return out

    def state_message(self) -> dict[str, Any]:
        """The retained ``state`` message of this reactor now."""
        engine = self.engine
        return state_message(
            self.topics.site if self.topics else "",
            self.config.id,
            self.clock.utc(),
            self.run.run_id if self.run else None,
            self.phase,
            engine.state.value if engine else "",
            self._alarm_states(),
            sorted(engine.pending) if engine else [],
        )

    def _alarm_states(self) -> dict[str, str]:
        return {
            n: a.state.value
            for n, a in self.alarms.alarms.items()
            if a.state.value not in ("normal", "suppressed")
        }

    def _track_state(self) -> None:
        """Bump ``state_version`` when what the retained state shows has changed."""
        engine = self.engine
        phase = self.phase
        key = (
            engine.index if engine else None,
            engine.state.value if engine else None,
            phase.o2_pct if phase else None,
            phase.co2_pct if phase else None,
            phase.temp_c if phase else None,
            tuple(sorted(self._alarm_states().items())),
            tuple(sorted(engine.pending)) if engine else (),
        )
        if key != self._state_key:
            self._state_key = key
            self.state_version += 1

    # ------------------------------------------------------------------------------ watchdog
    async def watchdog(self, stall_s: float) -> None:
        """Put every actuator in its safe state whenever the cycle has stalled for ``stall_s``."""
        tripped = False
        while True:
            await asyncio.sleep(stall_s / 4 / getattr(self.clock, "speed", 1.0))
            stalled = self.clock.monotonic() - self.heartbeat > stall_s
            if stalled and not tripped:
                log.error("reactor %s: cycle stalled; actuators to safe state", self.config.id)
                await self.safe_outputs()
            tripped = stalled


def _same(written: float | None, value: float) -> bool:
    """True when ``value`` is what the device already confirmed."""
    return written is not None and abs(written - value) < 1e-4
