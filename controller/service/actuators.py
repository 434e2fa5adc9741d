"""Verified actuator writes and the safe state of one reactor's outputs.

:class:`ActuatorWriter` writes what changed since the last *verified* write; a write that fails
(or a safe-state sweep) forgets the confirmed value, so the next cycle writes again even if the
request has not changed. An interlock can therefore never be defeated by one lost write.

Faults are reported once per state change, not once per cycle: the first failed write of an
actuator is an ``actuator_fault`` event; further failures only count; the first good write after
them is an ``actuator_recovered`` event with the number of failures and how long the fault lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial

from controller.core.reactor import Actuation
from controller.core.recipe_engine import Event
from drivers.base import FlowController
from drivers.catalog import RoleSet

O2_PUSH_STEP_PCT = 0.5
"""Push the measured O2 to a compensating CO2 probe when it moved this much, %-abs."""
O2_PUSH_EVERY_S = 600.0
"""... and at least this often (a probe's volatile compensation value is lost at its reset), s."""


def _same(written: float | None, value: float) -> bool:
    """True when ``value`` is what the device already confirmed."""
    return written is not None and abs(written - value) < 1e-4


class ActuatorWriter:
    """Writes one reactor's :class:`Actuation` to its mixers, heater and harvest pump.

    Writes to different transports (buses, lines) run concurrently; writes on one transport one
    after another, in a fixed order (mixers, heater, pump). ``transport_of`` may name a lane per
    device instead (a Modbus TCP gateway with several connections: its devices write in
    parallel).

    Args:
        roles: The reactor's instruments by role.
        timeout_s: Deadline of one verified write, s (inside the cycle deadline).
        safe_timeout_s: Deadline of each write of the safe-state sweep, s.
        transport_of: Role -> the bus or line its device hangs on (default: all on one).
    """

    def __init__(
        self,
        roles: RoleSet,
        timeout_s: float,
        safe_timeout_s: float,
        transport_of: dict[str, str] | None = None,
    ) -> None:
        self.roles = roles
        self.transport_of = transport_of or {}
        self.timeout_s = timeout_s
        self.safe_timeout_s = safe_timeout_s
        self.last: Actuation | None = None
        """The last actuation requested (None before the first cycle)."""
        self._written: dict[str, float] = {}  # role -> value the device last confirmed
        self._pushed_at: dict[str, float] = {}  # O2-compensation role -> run time of last push
        self.held_closed: set[str] = set()
        """Mixer roles whose valve the safe state closed with the instrument's own hold."""
        self.faults: dict[str, tuple[float, int, str]] = {}
        """Role -> (run time the fault began, s; failed writes since; last error)."""

    async def write(self, t: float, act: Actuation, o2_pct: float | None = None) -> list[Event]:
        """Write what changed since the last verified write; a failure is an event.

        ``o2_pct`` (trusted measured O2, %) is pushed to the CO2 probes that compensate for O2,
        when it has moved by ``O2_PUSH_STEP_PCT`` or ``O2_PUSH_EVERY_S`` has passed.
        """
        writes: list[tuple[str, Callable[[], Awaitable[None]], float]] = []
        if o2_pct is not None:
            for i, probe in enumerate(self.roles.o2_compensation):
                role = f"o2_compensation:{i}"
                pushed = self._written.get(role)
                stale = t - self._pushed_at.get(role, -1e18) >= O2_PUSH_EVERY_S
                if pushed is None or abs(pushed - o2_pct) >= O2_PUSH_STEP_PCT or stale:
                    self._pushed_at[role] = t
                    writes.append((role, partial(probe.write_o2_compensation, o2_pct), o2_pct))
        for role, value in act.mixer_flows_lpm().items():
            mixer = self.roles.mixers.get(role)
            if mixer is None or _same(self._written.get(role), value):
                continue
            if role in self.held_closed:
                if value <= 0.0:  # closed by its hold already: nothing to write
                    self._written[role] = 0.0
                    continue
                writes.append((role, partial(self._release_and_set, role, mixer, value), value))
                continue
            writes.append((role, partial(mixer.set_flow_lpm, value), value))
        if self.roles.heater is not None:  # rewritten every cycle: the power stage may time out
            writes.append(("heater", partial(self.roles.heater, act.heater_w), act.heater_w))
        pump = self.roles.pump
        if pump is not None and not _same(self._written.get("harvest_pump"), float(act.pump_on)):
            writes.append(("harvest_pump", partial(pump.set, act.pump_on), float(act.pump_on)))
        groups: dict[str, list[tuple[str, Callable[[], Awaitable[None]], float]]] = {}
        for write in writes:
            groups.setdefault(self.transport_of.get(write[0], ""), []).append(write)
        results = await asyncio.gather(*(self._write_group(t, g) for g in groups.values()))
        self.last = act
        return [event for events in results for event in events]

    async def _release_and_set(self, role: str, mixer: FlowController, lpm: float) -> None:
        """Cancel the safe state's valve hold, then set the flow (both verified)."""
        await mixer.cancel_hold()
        self.held_closed.discard(role)
        await mixer.set_flow_lpm(lpm)

    async def _write_group(
        self, t: float, writes: list[tuple[str, Callable[[], Awaitable[None]], float]]
    ) -> list[Event]:
        """The writes of one transport, one after another."""
        events: list[Event] = []
        for role, write, value in writes:
            events += await self._write(t, role, write(), value)
        return events

    async def _write(
        self, t: float, role: str, write: Awaitable[None], value: float
    ) -> list[Event]:
        try:
            async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                await write
        except Exception as exc:  # verified write failed: alarm path, retried next cycle
            self._written.pop(role, None)
            error = "no answer within the cycle" if isinstance(exc, TimeoutError) else repr(exc)
            fault = self.faults.get(role)
            if fault is not None:  # still failing: count it, say nothing new
                self.faults[role] = (fault[0], fault[1] + 1, error)
                return []
            self.faults[role] = (t, 1, error)
            return [Event(t, "actuator_fault", {"role": role, "error": error})]
        self._written[role] = value
        fault = self.faults.pop(role, None)
        if fault is None:
            return []
        detail = {"role": role, "failures": fault[1], "fault_s": t - fault[0], "error": fault[2]}
        return [Event(t, "actuator_recovered", detail)]

    async def safe_outputs(self) -> None:
        """Every actuator to its safe state: mixers closed, heater off, pump off.

        Mixers get a zero set point and their valves are held closed with the instrument's own
        hold, so a lost set point cannot reopen them; the next write to a held mixer cancels the
        hold first.

        Forgets what was written, so the next cycle (if any) rewrites every output.
        """
        self._written.clear()
        for role, mixer in self.roles.mixers.items():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(mixer.set_flow_lpm(0.0), timeout=self.safe_timeout_s)
            with contextlib.suppress(Exception):  # and the valve closed whatever the set point
                await asyncio.wait_for(mixer.hold_closed(), timeout=self.safe_timeout_s)
                self.held_closed.add(role)
        if self.roles.heater is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.heater(0.0), timeout=self.safe_timeout_s)
        if self.roles.pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.roles.pump.set(False), timeout=self.safe_timeout_s)
        self._written.clear()
        self.last = Actuation.safe()
