"""Operator intents: the typed commands a reactor's runner applies through its own methods.

A command arrives as JSON (control socket, MQTT, the operator page) and
:class:`~controller.service.commands.CommandProcessor` validates it into one of these models, checks
who may do it and audits it. The runner then checks it against its own state
(:meth:`~controller.service.runner.ReactorRunner.plan`, read-only) and applies it between two
cycles (:meth:`~controller.service.runner.ReactorRunner.apply_command`); nothing outside the runner
touches its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Intent(BaseModel):
    """Fields every command carries: where, which run, who, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reactor: str = Field(min_length=1, max_length=64)
    run_id: str = Field(min_length=1, max_length=128)
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=1000)


class Hold(Intent):
    """Hold the running phase."""

    verb: Literal["hold"]


class Restart(Intent):
    """Restart a held phase (also leaves the restart-policy safe state)."""

    verb: Literal["restart"]


class Stop(Intent):
    """Stop the run in an orderly way (outputs to safe state)."""

    verb: Literal["stop"]


class Abort(Intent):
    """Abort the run at once (outputs to safe state)."""

    verb: Literal["abort"]


class SetSetpoint(Intent):
    """Override a set point of the current phase."""

    verb: Literal["set_setpoint"]
    variable: Literal["o2_pct", "co2_pct", "temp_c"]
    value: float


class Acknowledge(Intent):
    """Acknowledge an alarm."""

    verb: Literal["acknowledge"]
    alarm: str = Field(min_length=1, max_length=64)


class Shelve(Intent):
    """Shelve an alarm for a while."""

    verb: Literal["shelve"]
    alarm: str = Field(min_length=1, max_length=64)
    minutes: float = Field(gt=0, le=24 * 60)


class ConfirmHarvest(Intent):
    """Confirm that a released harvest was collected."""

    verb: Literal["confirm_harvest"]
    harvest: str = Field(min_length=1, max_length=64)
    volume_ml: float = Field(gt=0, le=100_000)
    container: str = Field(min_length=1, max_length=128)


class Note(Intent):
    """Add a note to the run's record."""

    verb: Literal["note"]
    text: str = Field(min_length=1, max_length=2000)


Command = Annotated[
    Hold | Restart | Stop | Abort | SetSetpoint | Acknowledge | Shelve | ConfirmHarvest | Note,
    Field(discriminator="verb"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
"""Validates a command object into its intent (pydantic picks the model from ``verb``)."""

StateIntent = Hold | Restart | Stop | Abort
"""Intents that move the run's ISA-88 state."""


class Refused(Exception):  # noqa: N818 - a refusal, not an internal error
    """A command that must not be applied; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What an accepted command will change: the value before and after, for the audit trail."""

    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """An accepted intent waiting for the next cycle, with the role it was accepted under."""

    intent: Command
    role: str
