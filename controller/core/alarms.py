"""Alarms with ISA-18.2 states.

States: normal, active-unacknowledged, acknowledged, returned-unacknowledged, shelved (with expiry)
and suppressed (by design, when the condition does not apply).

An :class:`Alarm` is fed a condition every cycle: ``True`` (abnormal), ``False`` (normal) or
``None`` (does not apply now, e.g. no O2 set point in this phase: suppressed). Activation waits
``delay_s`` of continuous abnormality; the caller applies its deadband when computing the
condition (see :mod:`controller.alarm_checks`). Every state change is returned as an
:class:`~controller.core.recipe_engine.Event` of kind ``alarm`` for the journal and MQTT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.core.recipe_engine import Event


class AlarmState(StrEnum):
    """ISA-18.2 alarm states."""

    NORMAL = "normal"
    UNACK = "active_unacknowledged"
    ACKED = "active_acknowledged"
    RTN_UNACK = "returned_unacknowledged"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"


class Priority(StrEnum):
    """How urgently an operator must act."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(slots=True)
class Alarm:
    """One alarm and its state.

    Attributes:
        name: Identifier, e.g. ``o2_deviation``.
        priority: Urgency.
        delay_s: Continuous abnormal time before it activates, s.
        message: Operator text of the current activation.
    """

    name: str
    priority: Priority
    delay_s: float = 0.0
    state: AlarmState = AlarmState.NORMAL
    active: bool = False
    message: str = ""
    _abnormal_since: float | None = None
    shelved_until_s: float | None = None
    _state_before_shelve: AlarmState = AlarmState.NORMAL

    def update(self, now_s: float, condition: bool | None, message: str = "") -> Event | None:
        """Feed this cycle's condition; return an event if the state changed."""
        if self.state is AlarmState.SHELVED:
            if self.shelved_until_s is not None and now_s >= self.shelved_until_s:
                return self._set(now_s, AlarmState.NORMAL, "shelve expired", message, condition)
            self.active = bool(condition)
            return None
        if condition is None:
            self._abnormal_since = None
            self.active = False
            if self.state is AlarmState.NORMAL:
                self.state = AlarmState.SUPPRESSED  # bookkeeping only: nothing to announce
            elif self.state is not AlarmState.SUPPRESSED:
                return self._set(now_s, AlarmState.SUPPRESSED, "not applicable")
            return None
        if self.state is AlarmState.SUPPRESSED:
            self.state = AlarmState.NORMAL
        if condition:
            if self._abnormal_since is None:
                self._abnormal_since = now_s
            if not self.active and now_s - self._abnormal_since >= self.delay_s - 1e-9:
                self.active = True
                self.message = message
                return self._set(now_s, AlarmState.UNACK, "activated")
            return None
        self._abnormal_since = None
        if not self.active:
            return None
        self.active = False
        if self.state is AlarmState.UNACK:
            return self._set(now_s, AlarmState.RTN_UNACK, "returned to normal")
        return self._set(now_s, AlarmState.NORMAL, "returned to normal")

    def acknowledge(self, now_s: float) -> Event | None:
        """Operator acknowledgement; ``None`` if there is nothing to acknowledge."""
        if self.state is AlarmState.UNACK:
            return self._set(now_s, AlarmState.ACKED, "acknowledged")
        if self.state is AlarmState.RTN_UNACK:
            return self._set(now_s, AlarmState.NORMAL, "acknowledged")
        return None

    def shelve(self, now_s: float, until_s: float) -> Event:
        """Shelve (hide) the alarm until ``until_s``; it re-evaluates when the shelf expires."""
        self._state_before_shelve = self.state
        self.shelved_until_s = until_s
        return self._set(now_s, AlarmState.SHELVED, f"shelved until t={until_s:.0f} s")

    def _set(
        self,
        now_s: float,
        state: AlarmState,
        why: str,
        message: str = "",
        condition: bool | None = None,
    ) -> Event:
        old = self.state
        self.state = state
        if state is AlarmState.NORMAL and old is AlarmState.SHELVED:
            self.shelved_until_s = None
            self._abnormal_since = None
            self.active = False
            if condition:
                self._abnormal_since = now_s - self.delay_s
                self.active = True
                self.message = message
                self.state = AlarmState.UNACK
        return Event(
            now_s,
            "alarm",
            {
                "alarm": self.name,
                "priority": self.priority.value,
                "from": old.value,
                "to": self.state.value,
                "why": why,
                "message": self.message,
            },
        )


@dataclass(slots=True)
class AlarmSet:
    """All alarms of one reactor, by name."""

    alarms: dict[str, Alarm] = field(default_factory=dict)

    def add(self, alarm: Alarm) -> None:
        """Register an alarm (names are unique)."""
        self.alarms[alarm.name] = alarm

    def update(self, now_s: float, conditions: dict[str, tuple[bool | None, str]]) -> list[Event]:
        """Feed every alarm its (condition, message); return the state changes."""
        events = []
        for name, (condition, message) in conditions.items():
            event = self.alarms[name].update(now_s, condition, message)
            if event is not None:
                events.append(event)
        return events

    def snapshot(self) -> dict[str, Any]:
        """States for the journal and the operator page."""
        return {
            n: {
                "state": a.state.value,
                "active": a.active,
                "message": a.message,
                "priority": a.priority.value,
                "shelved_until_s": a.shelved_until_s,
            }
            for n, a in self.alarms.items()
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Restore states after a restart (unacknowledged alarms stay unacknowledged)."""
        for name, item in data.items():
            alarm = self.alarms.get(name)
            if alarm is None:
                continue
            alarm.state = AlarmState(item["state"])
            alarm.active = bool(item["active"])
            alarm.message = str(item["message"])
            alarm.shelved_until_s = item["shelved_until_s"]
