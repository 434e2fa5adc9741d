"""Simulated Vaisala GMP251/GMP252 CO2 probe and HMP humidity/temperature probe (Modbus RTU).

Register maps per docs/protocols.md §2.1 / §3.1: floats least-significant word first;
measurements read-only; configuration writable with FC16 only (FC06 -> exception 01); missing
data is NaN / 0x8000, not an exception; undefined addresses -> exception 02. The GMP also serves
the Vaisala test registers (0x1F00 int16 -12345, 0x1F01 float -123.45) for word-order checks.
"""

from __future__ import annotations

import math
from typing import Self

from pymodbus.simulator import DataType, SimData

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import RegisterType, WordOrder, decode, encode
from drivers.units import PPM_PER_PCT
from drivers.vaisala import (
    GMP_STATUS,
    GMP_VOLATILE_O2_COMPENSATION,
    Gmp25xConfig,
    HmpConfig,
)
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim, overlaps, put

_F32 = RegisterType.FLOAT32
_LSW = WordOrder.LITTLE
_NOT_AVAILABLE = 0x8000


def _floats(*values: float) -> list[int]:
    regs: list[int] = []
    for value in values:
        regs += encode(value, _F32, _LSW)
    return regs


class GmpSim(ModbusDeviceSim):
    """Vaisala GMP251/GMP252 on Modbus (default unit 240).

    Args:
        link: Source of CO2 and temperature.
        unit: Modbus unit id.
        clock: Time source for faults.
        warmup_s: Seconds after construction during which the CO2 status is 256 then 2 and the
            CO2 value NaN (start-up emulation); 0 disables.

    Attributes:
        not_available: Serve NaN / 0x8000 for the measurements (as during start-up).
        device_status: Value of the device status register (1 critical, 2 error, 4 warning).
        co2_status: Value of the CO2 status register (2 not reliable, 256 not ready).
        o2_compensation_pct: Last value written to the volatile O2 compensation register.
    """

    def __init__(
        self,
        link: PlantLink,
        *,
        unit: int = 240,
        clock: Clock = DEFAULT_CLOCK,
        warmup_s: float = 0.0,
    ) -> None:
        super().__init__(unit, clock=clock)
        self.link = link
        self.not_available = False
        self.device_status = 0
        self.co2_status = 0
        self.o2_compensation_pct = 0.0
        self._ready_at = clock.monotonic() + warmup_s
        self._warmup_s = warmup_s

    @classmethod
    def for_config(cls, cfg: Gmp25xConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``vaisala_gmp25x`` entry."""
        return cls(link, unit=cfg.unit, clock=clock)

    def build(self) -> list[SimData]:
        """Measurement, integer, configuration, status and test register blocks."""
        comp = _floats(1013.25, 25.0, 0.0, 0.0, 1013.25, 25.0, 0.0, 0.0)
        config = [self.unit, 2, 0, 2, 1, 2, 0, 0, 100]
        return [
            SimData(0x0000, values=[0] * 6, datatype=DataType.REGISTERS, readonly=True),
            SimData(0x0100, values=[0, 0], datatype=DataType.REGISTERS, readonly=True),
            SimData(0x0200, values=comp, datatype=DataType.REGISTERS),
            SimData(0x0300, values=config, datatype=DataType.REGISTERS),
            SimData(GMP_STATUS, values=[0, 0], datatype=DataType.REGISTERS, readonly=True),
            SimData(0x1F00, values=[0xCFC7, 0xE666, 0xC2F6], datatype=DataType.REGISTERS),
        ]

    def _statuses(self) -> tuple[int, int, bool]:
        remaining = self._ready_at - self.clock.monotonic()
        if remaining > 0:
            co2_status = 256 if remaining > self._warmup_s / 2 else 2
            return self.device_status, co2_status, True
        return self.device_status, self.co2_status, self.not_available

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        """Refresh measurements and statuses."""
        device_status, co2_status, missing = self._statuses()
        ppm = self.faults.measure("co2_pct", self.link.co2_pct()) * PPM_PER_PCT
        temp = self.faults.measure("temp_c", self.link.temp_c(), primary=False)
        if overlaps(address, count, 0x0000, 6):
            comp_t = float(decode(regs[0x020A - start : 0x020C - start], _F32, _LSW))
            co2 = math.nan if missing else ppm
            put(regs, start, 0x0000, _floats(co2, comp_t, math.nan if missing else temp))
        if overlaps(address, count, 0x0100, 2):
            ints = [_NOT_AVAILABLE, _NOT_AVAILABLE]
            if not missing:
                ints = [min(round(ppm), 0x7FFF), min(round(ppm / 10), 0x7FFF)]
            put(regs, start, 0x0100, ints)
        if overlaps(address, count, GMP_STATUS, 2):
            put(regs, start, GMP_STATUS, [device_status, co2_status])

    def on_write(
        self, fc: int, start: int, address: int, regs: list[int], values: list[int] | list[bool]
    ) -> int | None:
        """FC16 only; O2 compensation must be 0-100 %."""
        if fc != 16:
            return 1
        words = [int(v) for v in values]
        for base in (0x0206, GMP_VOLATILE_O2_COMPENSATION):
            if address <= base and base + 2 <= address + len(words):
                o2 = float(decode(words[base - address : base - address + 2], _F32, _LSW))
                if not 0.0 <= o2 <= 100.0:
                    return 3
                if base == GMP_VOLATILE_O2_COMPENSATION:
                    self.o2_compensation_pct = o2
        return None


class HmpSim(ModbusDeviceSim):
    """Vaisala HMP humidity/temperature probe on Modbus (RH @0x0000, T @0x0002, LSW first).

    Args:
        link: Source of temperature.
        unit: Modbus unit id (default 240).
        clock: Time source for faults.

    Attributes:
        rh_pct: Relative humidity served, %RH.
        not_available: Serve NaN for both values.
    """

    def __init__(self, link: PlantLink, *, unit: int = 240, clock: Clock = DEFAULT_CLOCK) -> None:
        super().__init__(unit, clock=clock)
        self.link = link
        self.rh_pct = 85.0
        self.not_available = False

    @classmethod
    def for_config(cls, cfg: HmpConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``vaisala_hmp`` entry."""
        return cls(link, unit=cfg.unit, clock=clock)

    def build(self) -> list[SimData]:
        """RH, T, dew point floats (6 registers)."""
        return [SimData(0x0000, values=[0] * 6, datatype=DataType.REGISTERS, readonly=True)]

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        """Refresh RH and T."""
        temp = self.faults.measure("temp_c", self.link.temp_c())
        rh = math.nan if self.not_available else self.rh_pct
        t = math.nan if self.not_available else temp
        put(regs, start, 0x0000, _floats(rh, t, t - 2.0))
