"""Verified actuator writes and the safe state of one reactor's outputs.

:class:`ActuatorWriter` writes what changed since the last *verified* write; a write that fails
(or a safe-state sweep) forgets the confirmed value, so the next cycle writes again even if the
request has not changed. An interlock can therefore never be defeated by one lost write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable

from controller.core.reactor import Actuation
from controller.core.recipe_engine import Event
from drivers.catalog import RoleSet


def _same(written: float | None, value: float) -> bool:
    """True when ``value`` is what the device already confirmed."""
    return written is not None and abs(written - value) < 1e-4


class ActuatorWriter:
    """Writes one reactor's :class:`Actuation` to its mixers, heater and harvest pump.

    Args:
        roles: The reactor's instruments by role.
        timeout_s: Deadline of one verified write, s (inside the cycle deadline).
        safe_timeout_s: Deadline of each write of the safe-state sweep, s.
    """

    def __init__(self, roles: RoleSet, timeout_s: float, safe_timeout_s: float) -> None:
        self.roles = roles
        self.timeout_s = timeout_s
        self.safe_timeout_s = safe_timeout_s
        self.last: Actuation | None = None
        """The last actuation requested (None before the first cycle)."""
        self._written: dict[str, float] = {}  # role -> value the device last confirmed

    async def write(self, t: float, act: Actuation) -> list[Event]:
        """Write what changed since the last verified write; a failure is an event."""
        events: list[Event] = []
        for role, value in act.mixer_flows_lpm().items():
            mixer = self.roles.mixers.get(role)
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
        self.last = act
        return events

    async def _write(
        self, t: float, role: str, write: Awaitable[None], value: float
    ) -> list[Event]:
        try:
            await asyncio.wait_for(write, timeout=self.timeout_s)
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
                await asyncio.wait_for(mixer.set_flow_lpm(0.0), timeout=self.safe_timeout_s)
        if self.roles.heater is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.heater(0.0), timeout=self.safe_timeout_s)
        if self.roles.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.pump.set(False), timeout=self.safe_timeout_s)
        self._written.clear()
        self.last = Actuation.safe()
