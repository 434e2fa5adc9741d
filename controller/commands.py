"""Operator commands: validated, authorised, audited, then applied inside the reactor's cycle.

A command is JSON (from ``hypoxia ctl`` over the control socket, or from MQTT). It is checked in
this order, and the first failure refuses it with a message saying why: well-formed (verb, fields,
types), reactor known, user known and allowed on that reactor, role allowed the verb, reason given
where one is required, run id is the reactor's active run, and the values are inside the site's
set-point limits and what the vessel can physically do. Accepted **and** refused commands are
written to the audit trail. Accepted ones are queued to the reactor's cycle, so they act between
two cycles, never in the middle of one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from controller.config_errors import ConfigError, from_validation_error
from controller.recipe import Recipe, check_feasible
from controller.recipe_engine import Event, PhaseState
from controller.service import ReactorRunner
from controller.site import SiteConfig

MAX_COMMAND_BYTES = 8192
"""Longest command accepted, bytes."""


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reactor: str = Field(min_length=1, max_length=64)
    run_id: str = Field(min_length=1, max_length=128)
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=1000)


class Hold(_Cmd):
    """Hold the running phase."""

    verb: Literal["hold"]


class Restart(_Cmd):
    """Restart a held phase (also leaves the restart-policy safe state)."""

    verb: Literal["restart"]


class Stop(_Cmd):
    """Stop the run in an orderly way (outputs to safe state)."""

    verb: Literal["stop"]


class Abort(_Cmd):
    """Abort the run at once (outputs to safe state)."""

    verb: Literal["abort"]


class SetSetpoint(_Cmd):
    """Override a set point of the current phase."""

    verb: Literal["set_setpoint"]
    variable: Literal["o2_pct", "co2_pct", "temp_c"]
    value: float


class Acknowledge(_Cmd):
    """Acknowledge an alarm."""

    verb: Literal["acknowledge"]
    alarm: str = Field(min_length=1, max_length=64)


class Shelve(_Cmd):
    """Shelve an alarm for a while."""

    verb: Literal["shelve"]
    alarm: str = Field(min_length=1, max_length=64)
    minutes: float = Field(gt=0, le=24 * 60)


class ConfirmHarvest(_Cmd):
    """Confirm that a released harvest was collected."""

    verb: Literal["confirm_harvest"]
    harvest: str = Field(min_length=1, max_length=64)
    volume_ml: float = Field(gt=0, le=100_000)
    container: str = Field(min_length=1, max_length=128)


class Note(_Cmd):
    """Add a note to the run's record."""

    verb: Literal["note"]
    text: str = Field(min_length=1, max_length=2000)


Command = Annotated[
    Hold | Restart | Stop | Abort | SetSetpoint | Acknowledge | Shelve | ConfirmHarvest | Note,
    Field(discriminator="verb"),
]
_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)

OPERATOR_VERBS = frozenset({"hold", "restart", "acknowledge", "shelve", "confirm_harvest", "note"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": OPERATOR_VERBS,
    "engineer": OPERATOR_VERBS | {"set_setpoint", "stop", "abort"},
    "admin": OPERATOR_VERBS | {"set_setpoint", "stop", "abort"},
}
REASON_REQUIRED = frozenset({"set_setpoint", "stop", "abort", "shelve"})


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to one command."""

    ok: bool
    verb: str
    message: str
    audit_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "verb": self.verb,
            "message": self.message,
            "audit_seq": self.audit_seq,
        }


class Refused(Exception):  # noqa: N818 - a refusal, not an internal error
    """A command that must not be applied; ``str()`` says why."""


class CommandProcessor:
    """Checks, audits and queues commands for the reactors of one site."""

    def __init__(
        self,
        site: SiteConfig,
        runners: dict[str, ReactorRunner],
        authenticated_user: str | None = None,
    ) -> None:
        self.site = site
        self.runners = runners
        self.authenticated_user = authenticated_user

    def handle(
        self,
        raw: str | bytes | dict[str, Any],
        source: str = "ctl",
        forced: dict[str, str] | None = None,
    ) -> CommandResult:
        """Process one command; never raises for bad input.

        Args:
            raw: The command (JSON text or an already-parsed object).
            source: Where it came from, for the audit trail.
            forced: Fields fixed by the transport (MQTT: reactor and user from the topic); a
                payload that says otherwise is refused.
        """
        data: dict[str, Any] = dict(forced or {})
        try:
            data = _force(_parse(raw), forced or {})
            cmd = _validate(data)
            runner = self._check(cmd)
            old, new, apply = self._plan(cmd, runner)
        except Refused as exc:
            return self._audit_refusal(data, str(exc), source)
        record = runner.audit.append(
            runner.clock.utc(),
            cmd.user,
            self._role(cmd.user),
            cmd.verb,
            f"{cmd.reactor}/{cmd.run_id}",
            old,
            new,
            cmd.reason,
            "accepted",
        )
        runner.commands.put_nowait(apply)
        return CommandResult(True, cmd.verb, f"accepted: {cmd.verb} on {cmd.reactor}", record.seq)

    def _role(self, user: str) -> str:
        found = self.site.user(user)
        return found.role if found else "unknown"

    def _audit_refusal(self, data: dict[str, Any], why: str, source: str) -> CommandResult:
        verb = str(data.get("verb", "?"))[:64]
        user = str(data.get("user", "?"))[:64]
        reactor = str(data.get("reactor", "?"))[:64]
        runner = self.runners.get(reactor) or next(iter(self.runners.values()))
        record = runner.audit.append(
            runner.clock.utc(),
            user,
            self._role(user),
            verb,
            f"{reactor}/{data.get('run_id', '?')}",
            None,
            {"source": source},
            str(data.get("reason", ""))[:1000],
            f"refused: {why}",
        )
        return CommandResult(False, verb, f"refused: {why}", record.seq)

    def _check(self, cmd: Command) -> ReactorRunner:
        runner = self.runners.get(cmd.reactor)
        if runner is None:
            raise Refused(f"unknown reactor '{cmd.reactor}' (known: {', '.join(self.runners)})")
        if self.authenticated_user is not None and cmd.user != self.authenticated_user:
            raise Refused(f"user '{cmd.user}' does not match the authenticated user")
        user = self.site.user(cmd.user)
        if user is None:
            raise Refused(f"unknown user '{cmd.user}'")
        if not user.may_command(cmd.reactor):
            raise Refused(f"user '{cmd.user}' may not command reactor '{cmd.reactor}'")
        if cmd.verb not in PERMISSIONS[user.role]:
            allowed = ", ".join(sorted(PERMISSIONS[user.role])) or "nothing"
            raise Refused(f"role '{user.role}' may not {cmd.verb} (allowed: {allowed})")
        if cmd.verb in REASON_REQUIRED and not cmd.reason.strip():
            raise Refused(f"{cmd.verb} needs a reason")
        if runner.finished:
            raise Refused(f"the run on {cmd.reactor} is no longer being controlled")
        if runner.run is None or runner.run.run_id != cmd.run_id:
            active = runner.run.run_id if runner.run else "none"
            raise Refused(f"unknown run '{cmd.run_id}' on {cmd.reactor} (active run: {active})")
        return runner

    def _plan(self, cmd: Command, runner: ReactorRunner) -> tuple[Any, Any, Any]:
        """(old value, new value, closure applied inside the cycle) for an accepted command."""
        engine = runner.engine
        assert engine is not None  # _check ensured an active run  # noqa: S101
        if isinstance(cmd, SetSetpoint):
            return self._plan_setpoint(cmd, runner)
        if isinstance(cmd, Acknowledge | Shelve):
            alarm = runner.alarms.alarms.get(cmd.alarm)
            if alarm is None:
                raise Refused(
                    f"unknown alarm '{cmd.alarm}' (known: "
                    f"{', '.join(sorted(runner.alarms.alarms))})"
                )
            if isinstance(cmd, Shelve):
                minutes = cmd.minutes

                def shelve() -> list[Event]:
                    t = runner.run_t_s()
                    return [alarm.shelve(t, t + 60.0 * minutes)]

                return alarm.state.value, "shelved", shelve

            def acknowledge() -> list[Event]:
                event = alarm.acknowledge(runner.run_t_s())
                return [event] if event else []

            return alarm.state.value, "acknowledged", acknowledge
        if isinstance(cmd, ConfirmHarvest):
            if cmd.harvest not in engine.pending:
                raise Refused(
                    f"harvest '{cmd.harvest}' is not awaiting confirmation "
                    f"(awaiting: {', '.join(sorted(engine.pending)) or 'none'})"
                )
            user, volume, container = cmd.user, cmd.volume_ml, cmd.container
            return (
                None,
                {"harvest": cmd.harvest, "volume_ml": volume, "container": container},
                (
                    lambda: engine.confirm_harvest(
                        cmd.harvest,
                        runner.run_t_s(),
                        by=user,
                        volume_ml=volume,
                        container=container,
                    )
                ),
            )
        if isinstance(cmd, Note):
            text, user = cmd.text, cmd.user
            return (
                None,
                text,
                lambda: [Event(runner.run_t_s(), "note", {"user": user, "text": text})],
            )
        return self._plan_state(cmd, runner)

    def _plan_state(
        self, cmd: Hold | Restart | Stop | Abort, runner: ReactorRunner
    ) -> tuple[Any, Any, Any]:
        engine = runner.engine
        assert engine is not None  # noqa: S101
        old = engine.state.value
        ended = (PhaseState.STOPPED, PhaseState.ABORTED, PhaseState.COMPLETE)
        if isinstance(cmd, Hold):
            if engine.state is not PhaseState.RUNNING:
                raise Refused(f"the phase is {old}, not running")

            def hold() -> list[Event]:  # re-checked when applied: another command may come first
                if engine.state is not PhaseState.RUNNING:
                    return self._not_applied(runner, cmd, f"the phase is {engine.state.value}")
                return engine.hold(runner.run_t_s())

            return old, "held", hold
        if isinstance(cmd, Restart):
            if engine.state is not PhaseState.HELD and not runner.safe_state:
                raise Refused(f"the phase is {old}, not held")

            def restart() -> list[Event]:
                if engine.state in ended or (
                    engine.state is not PhaseState.HELD and not runner.safe_state
                ):
                    return self._not_applied(runner, cmd, f"the phase is {engine.state.value}")
                runner.safe_state = False
                return engine.restart(runner.run_t_s())

            return old, "running", restart
        final = PhaseState.STOPPED if isinstance(cmd, Stop) else PhaseState.ABORTED
        reason = cmd.reason

        def end() -> list[Event]:
            if engine.state in ended:
                return self._not_applied(runner, cmd, f"the run has already {engine.state.value}")
            return engine.end(runner.run_t_s(), final, reason)

        return old, final.value, end

    def _not_applied(self, runner: ReactorRunner, cmd: Command, why: str) -> list[Event]:
        """An accepted command overtaken by another before it could act: audited as refused."""
        runner.audit.append(
            runner.clock.utc(),
            cmd.user,
            self._role(cmd.user),
            cmd.verb,
            f"{cmd.reactor}/{cmd.run_id}",
            None,
            None,
            cmd.reason,
            f"refused: not applied, {why}",
        )
        return [
            Event(
                runner.run_t_s(),
                "command_not_applied",
                {"verb": cmd.verb, "user": cmd.user, "why": why},
            )
        ]

    def _plan_setpoint(self, cmd: SetSetpoint, runner: ReactorRunner) -> tuple[Any, Any, Any]:
        phase = runner.phase
        if phase is None:
            raise Refused("no phase is running")
        low, high = getattr(runner.config.setpoint_limits, cmd.variable)
        if not low <= cmd.value <= high:
            raise Refused(
                f"{cmd.variable} {cmd.value} is outside the site limits "
                f"{low}-{high} for {cmd.reactor}"
            )
        changed = phase.model_copy(update={cmd.variable: cmd.value})
        try:
            check_feasible(
                Recipe(name="setpoint change", phases=[changed]),
                runner.config.process,
                "command",
                runner.config.id,
            )
        except ConfigError as exc:
            raise Refused(exc.problem) from None
        old = getattr(phase, cmd.variable)
        variable, value = cmd.variable, cmd.value

        def apply() -> list[Event]:
            runner.overrides[variable] = value
            runner.controller.apply_phase(runner.phase)
            runner.setpoint_changed()
            return [
                Event(
                    runner.run_t_s(),
                    "setpoint_changed",
                    {
                        "variable": variable,
                        "old": old,
                        "new": value,
                        "user": cmd.user,
                        "reason": cmd.reason,
                    },
                )
            ]

        return old, value, apply


def _force(data: dict[str, Any], forced: dict[str, str]) -> dict[str, Any]:
    """Fill transport-given fields; refuse a payload that contradicts them."""
    for key, value in forced.items():
        if key in data and data[key] != value:
            raise Refused(f"{key} '{data[key]}' in the payload differs from '{value}' of the topic")
    return {**data, **forced}


def _parse(raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if len(raw) > MAX_COMMAND_BYTES:
        raise Refused(f"command is {len(raw)} bytes; allowed: at most {MAX_COMMAND_BYTES}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise Refused(f"not JSON: {exc!s}"[:300]) from None
    if not isinstance(data, dict):
        raise Refused("a command is a JSON object with a 'verb'")
    return data


def _validate(data: dict[str, Any]) -> Command:
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = from_validation_error("command", exc, _Cmd)
        if any(e["type"] == "union_tag_invalid" for e in exc.errors()):
            raise Refused(
                f"unknown verb '{data.get('verb')}' (allowed: "
                f"{', '.join(sorted(PERMISSIONS['admin']))})"
            ) from None
        raise Refused(str(err).removeprefix("command: ")) from None
