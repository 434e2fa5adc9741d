"""One reactor's run in the service: the read -> check -> control -> actuate -> record cycle.

:class:`ReactorRunner` owns its reactor's state — the recipe engine, the controller, alarms,
interlocks, operator overrides and the safe state — and is the only code that changes it. Operator
commands reach it as typed intents (:mod:`controller.service.intents`): checked read-only by
:meth:`ReactorRunner.plan` when they arrive, applied by :meth:`ReactorRunner.apply_command` between
two cycles.

Isolation: every device call has a deadline inside the cycle and never raises into the cycle; a
silent instrument turns into an untrusted reading for its own reactor only. A watchdog per reactor
(:mod:`controller.service.watchdog`) puts every actuator in its safe state if the cycle stalls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from common.config_errors import ConfigError
from controller.core.alarms import Alarm, AlarmSet
from controller.core.monitor import PurgeWatch, SettleTracker
from controller.core.pericellular import MBAR_PER_MMHG, PericellularEstimator
from controller.core.reactor import Actuation, ReactorController
from controller.core.recipe import Phase, Recipe, check_feasible, check_growth
from controller.core.recipe_engine import Event, Measured, PhaseState, RecipeEngine
from controller.core.safety import CycleView, Interlocks, alarm_conditions, build_alarms
from controller.service import resume as resume_policy
from controller.service.actuators import ActuatorWriter
from controller.service.audit import AuditTrail
from controller.service.calibration import CalibrationWatch
from controller.service.clock import CycleClock
from controller.service.commit_group import GroupCommitter
from controller.service.intents import (
    Abort,
    Acknowledge,
    Command,
    ConfirmHarvest,
    Hold,
    Note,
    Plan,
    QueuedCommand,
    Refused,
    Restart,
    SetSetpoint,
    Shelve,
    StateIntent,
    Stop,
)
from controller.service.journal import CycleCommit, OutboxMessage, RunJournal, RunRecord
from controller.service.page_config import CylinderConfig
from controller.service.shaping import Snapshot, TelemetryShaper, reading_dict
from controller.service.site import ReactorConfig
from controller.service.startup import needed_sources
from controller.service.supply import gas_forecast
from controller.service.timing import CycleTiming
from controller.service.watchdog import WatchdogThread
from drivers.catalog import RoleSet, device_roles
from drivers.errors import as_driver_error
from drivers.reading import Quality, Reading
from telemetry.topics import Topics

log = logging.getLogger(__name__)

SUPPLY_EVERY_S = 60.0
"""How often the gas-cylinder forecast is refreshed, s of run time."""

CYCLE_DEADLINE_SHARE = 0.8
"""Share of the control period a device read or write may take before it counts as failed."""

ENDED = (PhaseState.STOPPED, PhaseState.ABORTED, PhaseState.COMPLETE)


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
        self.listeners: list[Callable[[ReactorRunner, list[Event]], None]] = []
        """Called after every committed cycle with its events (operator page, notifications)."""
        self.period_s = config.process.control_period_s
        self.time_scale = float(getattr(clock, "speed", 1.0))
        """Simulated seconds per wall second (1: real time); readings are marked simulated else."""
        self.timing = CycleTiming(
            self.period_s, config.limits.cycle_late_ms / 1000.0, self.time_scale
        )
        """Lateness and overruns of this reactor's cycles (telemetry, ``cycle_late`` alarm)."""
        self.commits: GroupCommitter | None = None
        """The service's group commit; None: each cycle commits on the journal's connection."""
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
        self.commands: asyncio.Queue[QueuedCommand] = asyncio.Queue()
        self.finished = False  # the cycle task has ended: no command can act any more
        deadline_s = CYCLE_DEADLINE_SHARE * self.period_s
        transport_of = {
            role: _write_lane(d.name, str(getattr(d, "bus", None) or getattr(d, "line", "")), roles)
            for d in config.devices
            for role in device_roles(d)
        }
        self.outputs = ActuatorWriter(
            roles, timeout_s=deadline_s, safe_timeout_s=self.period_s, transport_of=transport_of
        )
        self.shaper = TelemetryShaper(config.id, topics, journal.next_seq(config.id))
        self.awaiting_trust = False
        """A resumed run keeps its outputs safe until every reading its recipe needs is trusted."""
        self._trust_needed: list[str] = []
        self.cylinders: list[CylinderConfig] = []
        """This reactor's gas cylinders (site file ``[[page.cylinders]]``), set by the service."""
        self.gas_used_l: dict[str, float] = {}
        """Gas delivered since the run started, standard litres per gas (from commanded flows)."""
        self.supply: list[dict[str, Any]] = []
        """The latest cylinder forecast (every ``SUPPLY_EVERY_S`` of run time)."""
        self._supply_at_s = -float("inf")
        self._shortfall: str | None = None
        self.calibration: CalibrationWatch | None = None
        """This reactor's sensor calibrations (due alarm, record), set by the service."""
        self.cells: PericellularEstimator | None = None
        """Pericellular O2 estimator of the reactor's ``[reactors.culture]`` (none without)."""
        self.settled = SettleTracker()
        self.purge = PurgeWatch(
            config.process, self.controller.o2.dead_time_s, config.limits.supply_check_s
        )

    @property
    def seq(self) -> int:
        """The next MQTT sequence number of this reactor."""
        return self.shaper.seq

    @property
    def state_version(self) -> int:
        """Bumped whenever what the retained state message shows has changed."""
        return self.shaper.state_version

    # ------------------------------------------------------------------------- start / resume
    def start(self, recipe: Recipe, recipe_toml: str, sha256: str) -> str:
        """Start a new run of ``recipe``; raises ``ConfigError`` if the vessel cannot do it."""
        check_feasible(recipe, self.config.process, "recipe", self.config.id)
        self.cells = self._cells_estimator(recipe)
        now = self.clock.utc()
        run_id = self.journal.start_run(self.config.id, recipe.name, sha256, recipe_toml, now)
        self.run = self.journal.run(run_id)
        self.recipe = recipe
        self.engine = RecipeEngine(recipe, track_cells=self.cells is not None)
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
            {
                "run_id": run_id,
                "recipe": recipe.name,
                "sha256": sha256,
                "time_scale": self.time_scale,
                "calibration": self.calibration.in_force() if self.calibration else {},
            },
        )
        return run_id

    def resume(self, run: RunRecord, recipe: Recipe) -> list[Event]:
        """Resume ``run`` from its last checkpoint under the reactor's restart policy."""
        ckpt = self.journal.checkpoint(run.run_id)
        if ckpt is None:
            msg = f"run {run.run_id} has no checkpoint to resume from"
            raise RuntimeError(msg)
        self.run, self.recipe = run, recipe
        engine = self.engine = RecipeEngine.restore(recipe, ckpt.engine)
        state = ckpt.controller
        self.controller.apply_phase(self.phase)
        self.controller.restore(state["controller"])
        self.alarms.restore(state.get("alarms", {}))
        self.overrides = dict(state.get("overrides", {}))
        self.gas_used_l = {k: float(v) for k, v in state.get("gas_used_l", {}).items()}
        self.cells = self._cells_estimator(recipe, state.get("pericellular"))
        now = self.clock.utc()
        self.data_gap_s = max(0.0, (now - ckpt.utc).total_seconds())
        self.journal.record_outage(run.run_id, ckpt.utc, now)
        policy = self.config.restart
        t = self.run_t_s()
        events = [
            resume_policy.resumed_event(
                t, run.run_id, policy, self.data_gap_s, ckpt.run_t_s, engine
            )
        ]
        held, self.safe_state = resume_policy.apply_policy(policy, engine, t)
        events += held
        self.awaiting_trust = True
        self._trust_needed = sorted(needed_sources(recipe, self.roles))
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

    def describe(self) -> str:
        """One line for the operator: started or resumed, run, recipe, phase, exposure, policy."""
        engine, run = self.engine, self.run
        if engine is None or run is None:
            return "idle"
        phase = self.phase.name if self.phase else "-"
        exposure_s = engine.clock.exposure_s if engine.clock else 0.0
        what = "resumed" if self.awaiting_trust or self.data_gap_s > 0 else "started"
        line = (
            f"{what} run {run.run_id} of '{run.recipe_name}', phase '{phase}' "
            f"({engine.state.value}), exposure {exposure_s:.0f} s"
        )
        if what == "resumed":
            line += (
                f", after an outage of {self.data_gap_s:.0f} s, restart policy "
                f"'{self.config.restart}'; outputs safe until the readings are trusted"
            )
        return line

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

    def _cells_estimator(
        self, recipe: Recipe, saved: dict[str, Any] | None = None
    ) -> PericellularEstimator | None:
        """The reactor's culture growing as the recipe says; restored from a checkpoint if any.

        Raises ``ConfigError`` when the recipe's growth cap is below the culture's density.
        """
        culture = self.config.culture
        if culture is None:
            return None
        check_growth(recipe, culture.cells_per_cm2, None, "recipe", self.config.id)
        if recipe.growth is not None:
            culture = culture.with_growth(
                recipe.growth.rate_per_day, recipe.growth.max_cells_per_cm2
            )
        if saved:
            return PericellularEstimator.restore(culture, saved)
        return PericellularEstimator(culture)

    def _measured(self, trusted: dict[str, float | None]) -> Measured:
        """This cycle's trusted values, with what the cells see (the pericellular estimate).

        The estimator (``[reactors.culture]``) takes the trusted headspace O2 and temperature,
        and the barometric pressure of a ``pressure`` reading (mbar) where one exists.
        """
        measured = Measured(
            o2_pct=trusted.get("o2"),
            co2_pct=trusted.get("co2"),
            temp_c=trusted.get("temperature"),
            do_pct=trusted.get("do"),
        )
        if self.cells is not None:
            pressure_mbar = trusted.get("pressure")
            measured.cells_o2_pct = self.cells.update(
                self.period_s,
                measured.o2_pct,
                measured.temp_c,
                pressure_mbar / MBAR_PER_MMHG if pressure_mbar is not None else None,
            )
        return measured

    def _controller_state(self) -> dict[str, Any]:
        return {
            "controller": self.controller.snapshot(),
            "alarms": self.alarms.snapshot(),
            "overrides": self.overrides,
            "gas_used_l": self.gas_used_l,
            "pericellular": self.cells.snapshot() if self.cells is not None else None,
            "wall_utc": self.clock.wall_utc().isoformat(),
        }

    # ------------------------------------------------------------------------------ the cycle
    async def run_forever(
        self, initial_events: list[Event] | None = None, first_tick_s: float | None = None
    ) -> str:
        """Cycle until the run ends; return its final status.

        Ticks fall every period from ``first_tick_s`` (monotonic, s; default now): the service
        gives each reactor its own phase (controller/service/timing.py). A tick that passes while
        a cycle still runs is an overrun; whole periods missed are skipped, not caught up.

        An unexpected error ends the cycle loop in a known state: it is logged, every actuator is
        put in its safe state and the status is ``failed``.
        """
        pending = list(initial_events or [])
        tick = self.clock.monotonic() if first_tick_s is None else first_tick_s
        try:
            while True:
                await self.clock.sleep_until(tick)
                while not self.commands.empty():
                    pending += self.apply_command(self.commands.get_nowait())
                status = await self.cycle(pending, scheduled_s=tick)
                tick = self.timing.next_tick(tick, self.clock.monotonic())
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

    async def cycle(self, events: list[Event], scheduled_s: float | None = None) -> str:
        """One read -> check -> control -> actuate -> record cycle; return the run status.

        ``scheduled_s`` is the cycle's tick (monotonic, s; default: now), from which its
        lateness is measured.
        """
        engine, run = self.engine, self.run
        if engine is None or run is None:
            return "idle"
        scheduled = self.clock.monotonic() if scheduled_s is None else scheduled_s
        readings = await self._read_all()
        read_utc = self.clock.utc()
        trusted = {role: (r.value if r.trusted else None) for role, r in readings.items()}
        measured = self._measured(trusted)
        t = self.run_t_s()
        index = engine.index
        events += engine.step(t, self.period_s, measured)
        if engine.index != index:
            self.overrides = {}
            self.controller.apply_phase(self.phase)
            self.settled.reset()
        # what the outputs really were over the last period (after interlocks and safe states)
        act = self.controller.step(
            self.period_s, measured, engine.pump_on, applied=self.outputs.last
        )
        self.settled.update(self.phase, measured)
        expected = self.purge.update(t, self.controller.o2.mode, measured.o2_pct)
        self._forecast_supply(t)
        view = self._view(t, measured, readings, expected)
        act, lock_events = self.interlocks.apply(view, act)
        events += lock_events
        if self.awaiting_trust:
            untrusted = [n for n in self._trust_needed if not readings[n].trusted]
            if untrusted:  # resumed: outputs stay safe until the readings can be trusted
                act = Actuation.safe()
            else:
                self.awaiting_trust = False
                events.append(Event(t, "readings_trusted", {"readings": self._trust_needed}))
        if self.safe_state:  # restart policy "safe": outputs off until an operator restarts
            act = Actuation.safe()
        events += await self.outputs.write(t, act, measured.o2_pct)
        self.timing.outputs_written(scheduled, self.clock.monotonic())
        view.late_cycles = self.timing.late_cycles
        self._count_gas(act)
        events += self.alarms.update(t, alarm_conditions(view, self.config.limits, self.alarms))
        self.data_gap_s = 0.0
        self._record(t, readings, act, engine, measured.cells_o2_pct)
        await self._commit(run.run_id, t, engine, read_utc, events)
        self.shaper.track(self.phase, engine, self.alarms)
        if self.notify is not None:
            self.notify()
        self._tell_listeners(events)
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

    def _count_gas(self, act: Actuation) -> None:
        """Add this period's commanded flows to the gas used since the run started."""
        for gas, lpm in (
            ("n2", act.n2_lpm),
            ("air", act.air_lpm),
            ("o2", act.o2_lpm),
            ("co2", act.co2_lpm),
        ):
            if lpm > 0.0:
                self.gas_used_l[gas] = self.gas_used_l.get(gas, 0.0) + lpm * self.period_s / 60.0

    async def _commit(
        self, run_id: str, t: float, engine: RecipeEngine, read_utc: Any, events: list[Event]
    ) -> None:
        """Checkpoint, events and outbox of this cycle, durable before the outputs move again.

        Through the service's group commit when it has one (shared transactions, off the event
        loop: controller/service/commit_group.py), else on the journal's own connection.
        """
        commit = CycleCommit.of(
            run_id,
            self.clock.utc(),
            t,
            engine.snapshot(),
            self._controller_state(),
            events,
            self._outbox(read_utc, events, telemetry=True),
        )
        if self.commits is not None:
            await self.commits.commit(commit)
        else:
            self.journal.commit_cycles([commit])

    def _tell_listeners(self, events: list[Event]) -> None:
        """Hand the cycle's events to each listener; a failing listener never stops the cycle."""
        for listener in self.listeners:
            try:
                listener(self, events)
            except Exception:
                log.exception("reactor %s: cycle listener failed", self.config.id)

    async def _read_all(self) -> dict[str, Reading]:
        """Every sensor role, plus each mixer's measured flow as ``<role>_flow``."""
        sources = dict(self.roles.readers)
        sources.update(
            {f"{role}_flow": mixer.read_flow_lpm for role, mixer in self.roles.mixers.items()}
        )
        names = sorted(sources)
        results = await asyncio.gather(*(self._read(sources[n]) for n in names))
        if self.time_scale != 1.0:  # accelerated time: nothing here is a real measurement
            results = [
                replace(r, quality=Quality.SIMULATED) if r.quality is Quality.GOOD else r
                for r in results
            ]
        return dict(zip(names, results, strict=True))

    async def _read(self, read: Callable[[], Awaitable[Reading]]) -> Reading:
        try:
            # asyncio.timeout, not wait_for: no extra task per read (thousands a second)
            async with asyncio.timeout(CYCLE_DEADLINE_SHARE * self.period_s):
                return await read()
        except Exception as exc:  # a faulty instrument degrades its own reading only
            deadline_s = CYCLE_DEADLINE_SHARE * self.period_s
            reason = (
                f"timeout: no answer within the cycle deadline ({deadline_s:.2f} s)"
                if isinstance(exc, TimeoutError)
                else as_driver_error(exc, self.config.id).reason
            )
            return Reading.bad("", reason, self.clock.monotonic(), self.clock.utc())

    def _view(
        self, t: float, m: Measured, readings: dict[str, Reading], expected: float | None
    ) -> CycleView:
        """What safety sees of this cycle (read-only: the trackers were updated before)."""
        engine, reached = self.engine, self.settled.reached
        secondary = readings.get("o2_secondary")
        o2 = readings.get("o2")
        pending = {name: rec.at_s for name, rec in engine.pending.items()} if engine else {}
        n2_flow = readings.get("n2_mixer_flow")
        last = self.outputs.last
        return CycleView(
            now_s=t,
            phase=self.phase,
            o2_pct=m.o2_pct,
            co2_pct=m.co2_pct,
            temp_c=m.temp_c,
            o2_mode=self.controller.o2.mode,
            o2_settled=reached["o2"],
            co2_settled=reached["co2"],
            temp_settled=reached["temp"],
            o2_secondary_pct=secondary.value if secondary and secondary.trusted else None,
            o2_quality_reason=o2.reason if o2 else "no O2 sensor",
            n2_set_lpm=last.n2_lpm if last else 0.0,
            n2_actual_lpm=n2_flow.value if n2_flow is not None and n2_flow.trusted else None,
            purge_expected_pct=expected,
            pending_harvests=pending,
            data_gap_s=self.data_gap_s,
            cylinder_shortfall=self._shortfall,
            cylinders_forecast=bool(self.cylinders) and bool(self.supply),
            calibration_due=self.calibration.check(self.clock.utc()) if self.calibration else None,
        )

    def _forecast_supply(self, t: float) -> None:
        """Refresh the cylinder forecast every ``SUPPLY_EVERY_S`` of run time."""
        if t - self._supply_at_s < SUPPLY_EVERY_S:
            return
        self._supply_at_s = t
        try:
            self.supply = gas_forecast(self, dict(self.gas_used_l), self.cylinders)
        except Exception:  # a forecast must never end a cycle
            log.exception("reactor %s: gas forecast failed", self.config.id)
            return
        short = [row["message"] for row in self.supply if row.get("severity")]
        self._shortfall = "; ".join(short) if short else None

    async def safe_outputs(self) -> None:
        """Every actuator to its safe state: mixers at zero, heater off, pump off."""
        await self.outputs.safe_outputs()

    def _record(
        self,
        t: float,
        readings: dict[str, Reading],
        act: Actuation,
        engine: RecipeEngine,
        cells_o2_pct: float | None = None,
    ) -> None:
        phase = engine.phase
        self.snapshot = Snapshot(
            run_t_s=t,
            utc=self.clock.utc().isoformat(),
            phase=phase.name if phase else None,
            phase_state=engine.state.value,
            readings={role: reading_dict(r) for role, r in readings.items()},
            actuation=act.as_dict(),
            exposure_s=engine.clock.exposure_s if engine.clock else 0.0,
            harvests=[h.as_dict() for h in engine.harvests],
            lateness_ms=round(self.timing.lateness_s * 1000.0, 1),
            overruns=self.timing.overruns,
            pericellular_o2_pct=cells_o2_pct,
        )

    def _outbox(self, utc: Any, events: list[Event], *, telemetry: bool) -> list[OutboxMessage]:
        """This cycle's MQTT messages with fresh sequence numbers (events, then telemetry)."""
        active = sum(1 for a in self.alarms.alarms.values() if a.active)
        return self.shaper.outbox(
            utc,
            self.run.run_id if self.run else None,
            events,
            self.phase,
            self.snapshot if telemetry else None,
            active,
        )

    def state_message(self) -> dict[str, Any]:
        """The retained ``state`` message of this reactor now (with the gas-supply forecast)."""
        message = self.shaper.state_message(
            self.clock.utc(),
            self.run.run_id if self.run else None,
            self.phase,
            self.engine,
            self.alarms,
        )
        keys = ("gas", "used_l", "needed_l", "content_l", "empty_utc", "run_end_utc", "severity")
        message["gas_supply"] = [{k: row.get(k) for k in keys} for row in self.supply]
        return message

    # ------------------------------------------------------------------------------ watchdog
    async def watchdog(self, stall_s: float) -> None:
        """Watch this reactor's cycle from a thread of its own until cancelled.

        Every actuator goes to its safe state whenever no cycle has completed for ``stall_s``
        real seconds (:class:`~controller.service.watchdog.WatchdogThread`).
        """
        dog = WatchdogThread(
            self.config.id,
            lambda: self.heartbeat,
            self.safe_outputs,
            asyncio.get_running_loop(),
            stall_s,
        )
        dog.start()
        try:
            await asyncio.Event().wait()  # until cancelled with the service
        finally:
            dog.stop()

    # ------------------------------------------------------------------------------ intents
    def plan(self, intent: Command) -> Plan:
        """Check an intent against this reactor's state now; return what it will change.

        Read-only. Raises :class:`Refused` with the reason when the intent cannot apply.
        """
        engine = self.engine
        if engine is None:
            raise Refused(f"no run is active on {self.config.id}")
        match intent:
            case SetSetpoint():
                return self._plan_setpoint(intent)
            case Acknowledge():
                return Plan(self._alarm(intent.alarm).state.value, "acknowledged")
            case Shelve():
                return Plan(self._alarm(intent.alarm).state.value, "shelved")
            case ConfirmHarvest():
                if intent.harvest not in engine.pending:
                    raise Refused(
                        f"harvest '{intent.harvest}' is not awaiting confirmation "
                        f"(awaiting: {', '.join(sorted(engine.pending)) or 'none'})"
                    )
                return Plan(
                    None,
                    {
                        "harvest": intent.harvest,
                        "volume_ml": intent.volume_ml,
                        "container": intent.container,
                    },
                )
            case Note():
                return Plan(None, intent.text)
            case Hold():
                if engine.state is not PhaseState.RUNNING:
                    raise Refused(f"the phase is {engine.state.value}, not running")
                return Plan(engine.state.value, "held")
            case Restart():
                if engine.state is not PhaseState.HELD and not self.safe_state:
                    raise Refused(f"the phase is {engine.state.value}, not held")
                return Plan(engine.state.value, "running")
            case Stop() | Abort():
                return Plan(engine.state.value, _final_state(intent).value)

    def _alarm(self, name: str) -> Alarm:
        alarm = self.alarms.alarms.get(name)
        if alarm is None:
            known = ", ".join(sorted(self.alarms.alarms))
            raise Refused(f"unknown alarm '{name}' (known: {known})")
        return alarm

    def _plan_setpoint(self, intent: SetSetpoint) -> Plan:
        phase = self.phase
        if phase is None:
            raise Refused("no phase is running")
        low, high = getattr(self.config.setpoint_limits, intent.variable)
        if not low <= intent.value <= high:
            raise Refused(
                f"{intent.variable} {intent.value} is outside the site limits "
                f"{low}-{high} for {intent.reactor}"
            )
        changed = phase.model_copy(update={intent.variable: intent.value})
        try:
            check_feasible(
                Recipe(name="setpoint change", phases=[changed]),
                self.config.process,
                "command",
                self.config.id,
            )
        except ConfigError as exc:
            raise Refused(exc.problem) from None
        return Plan(getattr(phase, intent.variable), intent.value)

    def apply_command(self, queued: QueuedCommand) -> list[Event]:
        """Apply one accepted intent between cycles; a failure is an event, never a dead cycle."""
        try:
            return self._apply(queued)
        except Exception as exc:
            log.exception("reactor %s: command change failed", self.config.id)
            return [Event(self.run_t_s(), "command_failed", {"error": repr(exc)})]

    def _apply(self, queued: QueuedCommand) -> list[Event]:
        intent, engine, t = queued.intent, self.engine, self.run_t_s()
        if engine is None:
            return self._not_applied(queued, "no run is active")
        match intent:
            case SetSetpoint():
                return self._set_setpoint(intent, t)
            case Acknowledge():
                event = self._alarm(intent.alarm).acknowledge(t)
                return [event] if event else []
            case Shelve():
                return [self._alarm(intent.alarm).shelve(t, t + 60.0 * intent.minutes)]
            case ConfirmHarvest():
                return engine.confirm_harvest(
                    intent.harvest,
                    t,
                    by=intent.user,
                    volume_ml=intent.volume_ml,
                    container=intent.container,
                )
            case Note():
                return [Event(t, "note", {"user": intent.user, "text": intent.text})]
            case _:
                return self._apply_state(queued, intent, engine, t)

    def _apply_state(
        self, queued: QueuedCommand, intent: StateIntent, engine: RecipeEngine, t: float
    ) -> list[Event]:
        """Hold, restart, stop, abort — re-checked now: another command may have come first."""
        state = engine.state
        if isinstance(intent, Hold):
            if state is not PhaseState.RUNNING:
                return self._not_applied(queued, f"the phase is {state.value}")
            return engine.hold(t)
        if isinstance(intent, Restart):
            if state in ENDED or (state is not PhaseState.HELD and not self.safe_state):
                return self._not_applied(queued, f"the phase is {state.value}")
            self.safe_state = False
            return engine.restart(t)
        if state in ENDED:
            return self._not_applied(queued, f"the run has already {state.value}")
        return engine.end(t, _final_state(intent), intent.reason)

    def _set_setpoint(self, intent: SetSetpoint, t: float) -> list[Event]:
        phase = self.phase
        old = getattr(phase, intent.variable) if phase else None
        self.overrides[intent.variable] = intent.value
        self.controller.apply_phase(self.phase)
        self.settled.reset()
        detail = {
            "variable": intent.variable,
            "old": old,
            "new": intent.value,
            "user": intent.user,
            "reason": intent.reason,
        }
        return [Event(t, "setpoint_changed", detail)]

    def _not_applied(self, queued: QueuedCommand, why: str) -> list[Event]:
        """An accepted intent overtaken by another before it could act: audited as refused."""
        intent = queued.intent
        self.audit.append(
            self.clock.utc(),
            intent.user,
            queued.role,
            intent.verb,
            f"{intent.reactor}/{intent.run_id}",
            None,
            None,
            intent.reason,
            f"refused: not applied, {why}",
        )
        detail = {"verb": intent.verb, "user": intent.user, "why": why}
        return [Event(self.run_t_s(), "command_not_applied", detail)]


def _write_lane(device: str, transport: str, roles: RoleSet) -> str:
    """The lane of a device's writes: writes in one lane go one after another.

    A transport is one lane; a Modbus TCP gateway carrying several transactions at once
    (``connections`` > 1) has a lane per device.
    """
    hub = getattr(roles.devices.get(device), "hub", None)
    return f"{transport}/{device}" if int(getattr(hub, "slots", 1)) > 1 else str(transport)


def _final_state(intent: Stop | Abort) -> PhaseState:
    return PhaseState.STOPPED if isinstance(intent, Stop) else PhaseState.ABORTED
