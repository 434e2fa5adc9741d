"""Operator commands: validated, authorised, audited, then applied inside the reactor's cycle.

A command is JSON (from ``hypoxia ctl`` over the control socket, or from MQTT). It is checked in
this order, and the first failure refuses it with a message saying why: well-formed (verb, fields,
types — the typed intents of :mod:`controller.service.intents`), reactor known, user known and
allowed on that reactor, role allowed the verb, reason given where one is required, run id is the
reactor's active run; then the reactor's runner checks the intent against its state
(:meth:`~controller.service.runner.ReactorRunner.plan`: set-point limits, what the vessel can
physically do, alarm and harvest names, phase state). Accepted **and** refused commands are written
to the site's audit trail. Accepted intents are queued to the reactor's runner, which applies them
between two cycles, never in the middle of one.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from common.clock import Clock
from common.config_errors import from_validation_error
from controller.service.audit import AuditTrail
from controller.service.intents import COMMAND_ADAPTER, Command, Intent, QueuedCommand, Refused
from controller.service.runner import ReactorRunner
from controller.service.site import SiteConfig

MAX_COMMAND_BYTES = 8192
"""Longest command accepted, bytes."""


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


class CommandProcessor:
    """Checks, audits and queues commands for the reactors of one site."""

    def __init__(
        self,
        site: SiteConfig,
        runners: dict[str, ReactorRunner],
        audit: AuditTrail,
        clock: Clock,
        authenticated_user: str | None = None,
    ) -> None:
        self.site = site
        self.runners = runners
        self.audit = audit
        self.clock = clock
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
            plan = runner.plan(cmd)
        except Refused as exc:
            return self._audit_refusal(data, str(exc), source)
        role = self._role(cmd.user)
        record = self.audit.append(
            self.clock.utc(),
            cmd.user,
            role,
            cmd.verb,
            f"{cmd.reactor}/{cmd.run_id}",
            plan.old,
            plan.new,
            cmd.reason,
            "accepted",
        )
        runner.commands.put_nowait(QueuedCommand(cmd, role))
        return CommandResult(True, cmd.verb, f"accepted: {cmd.verb} on {cmd.reactor}", record.seq)

    def refuse(
        self,
        raw: str | bytes | dict[str, Any],
        why: str,
        source: str,
        forced: dict[str, str] | None = None,
    ) -> CommandResult:
        """Refuse a command without looking further (audited with ``why``)."""
        data: dict[str, Any] = dict(forced or {})
        with contextlib.suppress(Refused):
            data = _force(_parse(raw), forced or {})
        return self._audit_refusal(data, why, source)

    def _role(self, user: str) -> str:
        found = self.site.user(user)
        return found.role if found else "unknown"

    def _audit_refusal(self, data: dict[str, Any], why: str, source: str) -> CommandResult:
        verb = str(data.get("verb", "?"))[:64]
        user = str(data.get("user", "?"))[:64]
        reactor = str(data.get("reactor", "?"))[:64]
        record = self.audit.append(
            self.clock.utc(),
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
        return COMMAND_ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = from_validation_error("command", exc, Intent)
        if any(e["type"] == "union_tag_invalid" for e in exc.errors()):
            raise Refused(
                f"unknown verb '{data.get('verb')}' (allowed: "
                f"{', '.join(sorted(PERMISSIONS['admin']))})"
            ) from None
        raise Refused(str(err).removeprefix("command: ")) from None
