"""Modbus relay boards (coils) switching solenoid valves and the harvest pump.

Reference: docs/protocols.md §4.4; Waveshare "Modbus RTU Relay" protocol manual
(https://waveshare.com/wiki/Protocol_Manual_of_Modbus_RTU_Relay). Default 9600 8N1, unit 1;
FC01 reads relay states, FC05 switches one relay (0xFF00 on, 0x0000 off); coil 0 = relay 1.
The vendor's toggle value (0x5500) is deliberately never used: every command states the wanted
state, so it is idempotent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.base import SwitchedOutput
from drivers.errors import WriteVerifyError, as_driver_error
from drivers.reading import Quality, Reading
from drivers.registry import OnBus, OutputRole, RoleSet, SetFn, Transports
from drivers.transport.modbus import ModbusHub


class ModbusRelayBoard:
    """An N-channel Modbus relay board; every switch is read back and verified.

    Reference: Waveshare Modbus RTU Relay protocol manual, docs/protocols.md §4.4.

    Args:
        hub: The bus.
        unit: Modbus unit id (default 1).
        channels: Number of relays (coils 0..channels-1).
        name: Label used in errors and logs.
        base_address: Wire address of relay 1 (0 on Waveshare boards).
        clock: Time source of :meth:`read_all`'s readings.
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 1,
        *,
        channels: int = 8,
        name: str = "relays",
        base_address: int = 0,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        if not 1 <= channels <= 64:
            raise ValueError("channels must be 1..64")
        self.hub = hub
        self.unit = unit
        self.channels = channels
        self.name = name
        self.base_address = base_address
        self.clock = clock

    @property
    def where(self) -> str:
        """``"NAME (unit U on bus B)"`` for messages."""
        return f"{self.name} (unit {self.unit} on {self.hub.label})"

    async def start(self) -> None:
        """Nothing to prepare (relays keep their state; the controller sets them explicitly)."""

    def _check(self, index: int) -> None:
        if not 0 <= index < self.channels:
            raise ValueError(f"relay index {index} outside 0..{self.channels - 1}")

    async def set(self, index: int, on: bool) -> None:
        """Switch relay ``index`` (0-based) on or off and verify by reading the coil back.

        Raises:
            ValueError: Index outside the board.
            WriteVerifyError: The coil reads back in the other state (stuck relay/firmware).
            TransportError: The command could not be delivered.
        """
        self._check(index)
        address = self.base_address + index
        await self.hub.write_coil(self.unit, address, on)
        (state,) = await self.hub.read_coils(self.unit, address, 1)
        if state != on:
            raise WriteVerifyError(self.name, f"relay {index}", on, state)

    async def get(self, index: int) -> bool:
        """State of relay ``index`` as reported by the board.

        Raises:
            TransportError: The board did not answer.
        """
        self._check(index)
        (state,) = await self.hub.read_coils(self.unit, self.base_address + index, 1)
        return state

    async def read_states(self) -> list[bool]:
        """States of all relays, index 0 first (one FC01 transaction)."""
        return await self.hub.read_coils(self.unit, self.base_address, self.channels)

    async def read_all(self) -> dict[str, Reading]:
        """Every relay as ``coilN`` = 1.0 / 0.0; one BAD ``coils`` reading if the read fails."""
        try:
            states = await self.read_states()
        except Exception as exc:  # reported as a bad reading, like any other fault
            reason = as_driver_error(exc, self.where).reason
            return {"coils": Reading.bad("", reason, self.clock.monotonic(), self.clock.utc())}
        monotonic_s, utc = self.clock.monotonic(), self.clock.utc()
        return {
            f"coil{i}": Reading(float(on), "", Quality.GOOD, monotonic_s, utc)
            for i, on in enumerate(states)
        }

    def output(self, index: int, name: str) -> RelayOutput:
        """A :class:`RelayOutput` for one channel (e.g. ``board.output(0, "n2-valve")``)."""
        self._check(index)
        return RelayOutput(self, index, name)


class RelayOutput:
    """One relay channel seen as an on/off output (solenoid valve, harvest pump).

    Satisfies :class:`drivers.base.SwitchedOutput`.

    Args:
        board: The relay board.
        index: Relay index, 0-based.
        name: Label, e.g. ``"n2-solenoid"`` or ``"harvest-pump"``.
    """

    def __init__(self, board: ModbusRelayBoard, index: int, name: str) -> None:
        self.board = board
        self.index = index
        self.name = name

    async def set(self, on: bool) -> None:
        """Switch on (energise) or off, verified."""
        await self.board.set(self.index, on)

    async def read(self) -> bool:
        """Current state (True = energised)."""
        return await self.board.get(self.index)


class RelayBoardConfig(OnBus):
    """Modbus relay board; ``outputs`` maps roles (heater, harvest_pump) to coil indexes."""

    driver: Literal["relay_board"]
    channels: int = Field(default=8, ge=1, le=64)
    outputs: dict[OutputRole, int] = Field(default_factory=dict)

    def served_roles(self) -> list[str]:
        """The output roles wired to a relay."""
        return list(self.outputs)

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> ModbusRelayBoard:
        """A :class:`ModbusRelayBoard`; each wired relay becomes the pump or an on/off heater."""
        board = ModbusRelayBoard(
            self.hub(transports), self.unit, channels=self.channels, name=self.name, clock=clock
        )
        for out_role, index in self.outputs.items():
            output = board.output(index, f"{self.name}:{out_role}")
            if out_role == "harvest_pump":
                roles.pump = output
            else:
                roles.heater = _relay_heater(output)
        return board


def _relay_heater(output: SwitchedOutput) -> SetFn:
    """On/off heater: on for any positive power request (a thermostat-style relay)."""

    async def set_power(power_w: float) -> None:
        await output.set(power_w > 0.0)  # a failed read-back raises: the cycle reports it

    return set_power
