"""Simulated Modbus device described by the same :class:`RegisterMap` the generic driver uses.

Each table (holding, input, coil, discrete) spans from its lowest to its highest point address
(gaps read as 0, as many devices allow); addresses outside are exception 02. Point values come
from callables in engineering units and are encoded with the point's type, word order, scale and
offset, so a map can be round-tripped through the real driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Self

from pymodbus.simulator import DataType, SimData

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import decode, encode
from drivers.register_map import RegisterKind, RegisterMap, RegisterMapConfig, RegisterPoint
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim, put

_FC_KIND = {
    1: RegisterKind.COIL,
    5: RegisterKind.COIL,
    15: RegisterKind.COIL,
    2: RegisterKind.DISCRETE,
    3: RegisterKind.HOLDING,
    6: RegisterKind.HOLDING,
    16: RegisterKind.HOLDING,
    4: RegisterKind.INPUT,
}


class RegisterMapSim(ModbusDeviceSim):
    """A device serving a :class:`RegisterMap`.

    Args:
        register_map: Points to serve.
        sources: Engineering-unit value per point name (points without a source read 0, or
            the last value written).
        unit: Modbus unit id.
        clock: Time source for faults.

    Attributes:
        raw_overrides: Point name -> raw register value to serve instead (inject sentinels).
        written: Point name -> last engineering value written by a client.
    """

    def __init__(
        self,
        register_map: RegisterMap,
        sources: Mapping[str, Callable[[], float]] | None = None,
        *,
        unit: int = 1,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        super().__init__(unit, clock=clock)
        self.map = register_map
        self.sources = dict(sources or {})
        self.raw_overrides: dict[str, int] = {}
        self.written: dict[str, float] = {}

    @classmethod
    def for_config(cls, cfg: RegisterMapConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``register_map`` entry.

        Points mapped to sensor roles follow the plant; power written to a ``heater`` point
        heats it.
        """
        getters = _sensor_getters(link)
        sources = {point: getters[role] for role, point in cfg.roles.items() if role in getters}
        sim = cls(cfg.map, sources, unit=cfg.unit, clock=clock)
        heater_point = cfg.roles.get("heater")
        if heater_point is not None:
            link.wire_heater(lambda: sim.written.get(heater_point, 0.0))
        return sim

    def _span(self, kind: RegisterKind) -> tuple[int, int] | None:
        points = [p for p in self.map.points if p.kind is kind]
        if not points:
            return None
        first = min(p.address for p in points)
        return first, max(p.address + p.count for p in points) - first

    def build(self) -> tuple[list[SimData], ...]:
        """One contiguous block per table (a placeholder where a table is unused)."""
        tables: list[list[SimData]] = []
        for kind in (RegisterKind.COIL, RegisterKind.DISCRETE):
            span = self._span(kind)
            first, size = span or (0, 1)
            tables.append([SimData(first, count=size, values=False, datatype=DataType.BITS)])
        for kind in (RegisterKind.HOLDING, RegisterKind.INPUT):
            span = self._span(kind)
            if span is None:
                tables.append([SimData(0, datatype=DataType.INVALID)])
            else:
                first, size = span
                tables.append([SimData(first, values=[0] * size, datatype=DataType.REGISTERS)])
        return tuple(tables)

    def _raw(self, p: RegisterPoint, value: float) -> list[int]:
        if p.name in self.raw_overrides:
            raw = self.raw_overrides[p.name] & (0xFFFF if p.count == 1 else 0xFFFFFFFF)
            return [raw] if p.count == 1 else [raw >> 16, raw & 0xFFFF]
        return encode((value - p.offset) / p.scale, p.dtype, p.word_order)

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        """Refresh register points (bit points are served from the table as written)."""
        kind = _FC_KIND.get(fc)
        if kind not in (RegisterKind.HOLDING, RegisterKind.INPUT):
            return
        for p in self.map.points:
            if p.kind is not kind:
                continue
            source = self.sources.get(p.name)
            if source is None and p.name not in self.raw_overrides:
                continue
            value = self.faults.measure(p.name, source() if source else 0.0)
            put(regs, start, p.address, self._raw(p, value))

    def on_write(
        self, fc: int, start: int, address: int, regs: list[int], values: list[int] | list[bool]
    ) -> int | None:
        """Record writes to writable points; writes elsewhere are exception 02."""
        kind = _FC_KIND.get(fc)
        for p in self.map.points:
            if p.kind is kind and p.address == address:
                if not p.writable:
                    return 2
                if kind is RegisterKind.COIL:
                    self.written[p.name] = float(bool(values[0]))
                else:
                    raw = decode([int(v) for v in values], p.dtype, p.word_order)
                    self.written[p.name] = float(raw) * p.scale + p.offset
                return None
        return 2


def _sensor_getters(link: PlantLink) -> dict[str, Callable[[], float]]:
    """What each sensor role measures on the plant."""
    return {
        "o2": link.o2_pct,
        "o2_secondary": link.o2_pct,
        "co2": link.co2_pct,
        "co2_secondary": link.co2_pct,
        "temperature": link.temp_c,
        "temperature_secondary": link.temp_c,
    }
