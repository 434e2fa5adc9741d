"""Simulated multi-channel PT100 transmitter (PTA8C04 class, Modbus RTU, int16 x 0.1 degC).

Register map per docs/protocols.md §3.2: channel temperatures at wire 0..n-1, resistances at
32.., configuration at 250..255. Channel 0 follows ``link.temp_c()`` unless other sources are
given; an open probe reads as a sentinel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Self

from pymodbus.simulator import DataType, SimData

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import RegisterType, encode
from drivers.pt100 import Pt100Config
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim, put


def _pt100_ohm(temp_c: float) -> float:
    """Callendar-Van Dusen for T >= 0 degC (good enough for a simulator)."""
    return 100.0 * (1 + 3.9083e-3 * temp_c - 5.775e-7 * temp_c * temp_c)


class Pt100Sim(ModbusDeviceSim):
    """PT100 Modbus module.

    Args:
        link: Default source for channel 0.
        unit: Modbus unit id (default 1).
        channels: Number of channels (4 or 8).
        sources: Per-channel temperature sources, degC; default ``{0: link.temp_c}``.
        clock: Time source for faults.

    Attributes:
        open_channels: Channels whose probe is "broken": they read ``open_sentinel``.
        open_sentinel: Raw value served for an open probe (0x8000 by default).
    """

    def __init__(
        self,
        link: PlantLink,
        *,
        unit: int = 1,
        channels: int = 4,
        sources: Mapping[int, Callable[[], float]] | None = None,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        super().__init__(unit, clock=clock)
        self.channels = channels
        self.sources: dict[int, Callable[[], float]] = dict(sources or {0: link.temp_c})
        self.open_channels: set[int] = set()
        self.open_sentinel = 0x8000

    @classmethod
    def for_config(cls, cfg: Pt100Config, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``pt100`` entry: its channel follows the plant."""
        return cls(
            link,
            unit=cfg.unit,
            channels=max(4, cfg.channel + 1),
            sources={cfg.channel: link.temp_c},
            clock=clock,
        )

    def build(self) -> list[SimData]:
        """Temperatures, resistances, corrections and configuration."""
        n = self.channels
        return [
            SimData(0, values=[0] * n, datatype=DataType.REGISTERS, readonly=True),
            SimData(32, values=[0] * n, datatype=DataType.REGISTERS, readonly=True),
            SimData(64, values=[0] * n, datatype=DataType.REGISTERS),
            SimData(250, values=[0, 0, 0, self.unit, 3, 0], datatype=DataType.REGISTERS),
        ]

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        """Refresh channel temperatures and resistances."""
        temps: list[int] = []
        ohms: list[int] = []
        for ch in range(self.channels):
            source = self.sources.get(ch)
            if source is None or ch in self.open_channels:
                temps.append(self.open_sentinel)
                ohms.append(0xFFFF)
                continue
            temp = self.faults.measure(f"ch{ch}", source())
            temps += encode(max(min(temp * 10, 32000), -32000), RegisterType.INT16)
            ohms.append(min(round(_pt100_ohm(temp) * 10), 0xFFFE))
        put(regs, start, 0, temps)
        put(regs, start, 32, ohms)
