"""Simulated Modbus relay board (Waveshare-style coils), states pushed to the :class:`PlantLink`.

FC01 reads relay states, FC05/FC15 switch them (docs/protocols.md §4.4). The vendor's FC05
toggle value 0x5500 is not emulated: pymodbus decodes any non-zero value as ON before the
simulator sees it (verified, docs/protocols.md §4.4).
"""

from __future__ import annotations

from typing import Self

from pymodbus.simulator import DataType, SimData

from common.clock import DEFAULT_CLOCK, Clock
from drivers.relay_board import RelayBoardConfig
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim


class RelayBoardSim(ModbusDeviceSim):
    """N-channel relay board; ``faults.stuck`` makes relays ignore commands (welded contacts).

    Args:
        link: Receives ``set_relay(index, on)``.
        unit: Modbus unit id (default 1).
        channels: Number of relays.
        clock: Time source for faults.

    Attributes:
        states: Current relay states, index 0 first.
    """

    def __init__(
        self, link: PlantLink, *, unit: int = 1, channels: int = 8, clock: Clock = DEFAULT_CLOCK
    ) -> None:
        super().__init__(unit, clock=clock)
        self.link = link
        self.channels = channels
        self.states = [False] * channels

    @classmethod
    def for_config(cls, cfg: RelayBoardConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``relay_board`` entry; its outputs are wired."""
        for role, index in cfg.outputs.items():
            link.wire_relay(index, role)
        return cls(link, unit=cfg.unit, channels=cfg.channels, clock=clock)

    def build(self) -> tuple[list[SimData], ...]:
        """Coils 0..n-1 (current states, so a restarted server keeps them); dummy other tables."""
        return (
            [SimData(0, values=list(self.states), datatype=DataType.BITS)],
            [SimData(0, values=False, datatype=DataType.BITS)],
            [SimData(0x4000, values=[self.unit], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        )

    def current_for_write(
        self, fc: int, start: int, address: int, regs: list[int], count: int
    ) -> list[bool]:
        """Present coil states of the addressed relays."""
        return [self.states[i] for i in range(address, min(address + count, self.channels))]

    def on_write(
        self, fc: int, start: int, address: int, regs: list[int], values: list[int] | list[bool]
    ) -> int | None:
        """Switch relays and tell the plant."""
        if fc not in (5, 15):
            return None
        if address + len(values) > self.channels:
            return 2
        for offset, value in enumerate(values):
            index = address + offset
            self.states[index] = bool(value)
            self.link.set_relay(index, bool(value))
        return None
