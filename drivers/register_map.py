"""Generic Modbus register-map driver: add an instrument from configuration alone.

A :class:`RegisterMap` (pydantic v2, ``extra="forbid"``) lists named points -- register kind,
wire address, type, word order, scale, offset, unit, valid range, sentinels -- and
:class:`ModbusRegisterDevice` reads them in as few transactions as possible (adjacent points of
the same kind are merged into one read). Example (TOML in a site file)::

    [[devices.o2_transmitter.map.points]]
    name = "o2_pct"
    kind = "holding"
    address = 0          # wire (0-based) address = manual register number - 1
    dtype = "int16"
    scale = 0.1
    unit = "%"
    valid_min = 0
    valid_max = 25
    sentinels = [32767, 32768]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import RegisterType, WordOrder, decode, encode, float32, register_count
from drivers.errors import WriteVerifyError, as_driver_error
from drivers.quality import Stamp, Stamper, ValidRange
from drivers.reading import Reading
from drivers.registry import OnBus, ReadFn, Role, RoleSet, SetFn, Transports
from drivers.transport.modbus import ModbusHub


class RegisterKind(StrEnum):
    """Modbus data table: holding (FC03/06/16), input (FC04), coil (FC01/05), discrete (FC02)."""

    HOLDING = "holding"
    INPUT = "input"
    COIL = "coil"
    DISCRETE = "discrete"


_BIT_KINDS = (RegisterKind.COIL, RegisterKind.DISCRETE)


class RegisterPoint(BaseModel):
    """One named value in a device's register map.

    ``value = raw * scale + offset`` in ``unit``. Coils and discrete inputs read as 1.0 / 0.0
    (``dtype``, ``word_order``, ``scale`` and ``offset`` are ignored for them).

    Attributes:
        name: Identifier with its unit, e.g. ``"o2_pct"``, ``"temp_c"``.
        kind: Register table.
        address: Wire (0-based) address, 0-65535; manual register number minus one.
        dtype: Stored type for registers.
        word_order: Order of the words of 32-bit types (``"big"`` = MSW first / ABCD,
            ``"little"`` = LSW first, as on Vaisala).
        scale: Multiplier applied to the raw value (non-zero).
        offset: Added after scaling.
        unit: Canonical unit string of the scaled value (``"%"``, ``"degC"``, ``"L/min"`` ...).
        valid_min: Lowest plausible scaled value; below it the reading is BAD.
        valid_max: Highest plausible scaled value; above it the reading is BAD.
        sentinels: Raw register values that mean "not available" (unsigned or signed form,
            e.g. ``32768`` or ``-32768`` for 0x8000).
        writable: Allow :meth:`ModbusRegisterDevice.write` (holding registers and coils only).
        write_function: Function code for holding-register writes: 16 (default) or 6 (one
            16-bit register; some cheap transmitters only implement FC06).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    kind: RegisterKind = RegisterKind.HOLDING
    address: int = Field(ge=0, le=65535)
    dtype: RegisterType = RegisterType.INT16
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = Field(max_length=16)
    valid_min: float | None = None
    valid_max: float | None = None
    sentinels: tuple[int, ...] = ()
    writable: bool = False
    write_function: Literal[6, 16] = 16

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be finite and non-zero")
        lo, hi = self.valid_min, self.valid_max
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"valid_min {lo} > valid_max {hi}")
        if self.address + self.count > 65536:
            raise ValueError("address + register count exceeds 65535")
        if self.writable and self.kind not in (RegisterKind.HOLDING, RegisterKind.COIL):
            raise ValueError(f"{self.kind} points cannot be writable")
        if self.writable and self.write_function == 6 and self.count != 1:
            raise ValueError("write_function 6 writes one register; use 16 for 32-bit types")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits) occupied."""
        return 1 if self.kind in _BIT_KINDS else register_count(self.dtype)

    @property
    def valid(self) -> ValidRange | None:
        """Valid range, or ``None`` when unbounded on both sides."""
        if self.valid_min is None and self.valid_max is None:
            return None
        low = -math.inf if self.valid_min is None else self.valid_min
        high = math.inf if self.valid_max is None else self.valid_max
        return ValidRange(low, high)


class RegisterMap(BaseModel):
    """A device model's register map: its points and how reads may be merged.

    Attributes:
        points: The points (unique names).
        max_gap: Largest run of unused addresses still read through to merge two points into one
            transaction (0 = only adjacent points). Use 0 for devices that reject gaps.
        max_block: Most registers (or bits) per read, 1-125.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    points: tuple[RegisterPoint, ...] = Field(min_length=1)
    max_gap: int = Field(0, ge=0, le=64)
    max_block: int = Field(64, ge=1, le=125)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [p.name for p in self.points]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate point names: {', '.join(dupes)}")
        return self

    def point(self, name: str) -> RegisterPoint:
        """The point called ``name``.

        Raises:
            KeyError: No such point.
        """
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class _Block:
    kind: RegisterKind
    address: int
    count: int
    points: tuple[RegisterPoint, ...]


def plan_reads(register_map: RegisterMap) -> list[_Block]:
    """Group points into as few reads as ``max_gap`` / ``max_block`` allow."""
    blocks: list[_Block] = []
    for kind in RegisterKind:
        points = sorted((p for p in register_map.points if p.kind is kind), key=lambda p: p.address)
        current: list[RegisterPoint] = []
        start = end = 0
        for p in points:
            new_end = max(end, p.address + p.count)
            if (
                current
                and p.address - end <= register_map.max_gap
                and (new_end - start <= register_map.max_block)
            ):
                current.append(p)
                end = new_end
                continue
            if current:
                blocks.append(_Block(kind, start, end - start, tuple(current)))
            current, start, end = [p], p.address, p.address + p.count
        if current:
            blocks.append(_Block(kind, start, end - start, tuple(current)))
    return blocks


class ModbusRegisterDevice:
    """A Modbus instrument described entirely by a :class:`RegisterMap`.

    Reference: whatever manual the map was transcribed from; docs/protocols.md §0 for the
    numbering and word-order conventions.

    Args:
        hub: The bus.
        unit: Modbus unit id, 0-247.
        register_map: The device model's map.
        name: Label used in reasons and logs.
        clock: Time source.
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int,
        register_map: RegisterMap,
        *,
        name: str = "modbus-device",
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        self.hub = hub
        self.unit = unit
        self.map = register_map
        self.name = name
        self._stamper = Stamper(clock)
        self._blocks = plan_reads(register_map)
        self._single = {
            p.name: _Block(p.kind, p.address, p.count, (p,)) for p in register_map.points
        }
        self._valid = {p.name: p.valid for p in register_map.points}

    @property
    def where(self) -> str:
        """``"NAME (unit U on bus B)"`` for messages."""
        return f"{self.name} (unit {self.unit} on {self.hub.label})"

    @property
    def transactions_per_read(self) -> int:
        """Number of Modbus transactions one :meth:`read_all` performs."""
        return len(self._blocks)

    async def start(self) -> None:
        """Nothing to prepare."""

    async def read_all(self) -> dict[str, Reading]:
        """Every point, by name; a failed block makes its points BAD, others are unaffected."""
        result: dict[str, Reading] = {}
        for block in self._blocks:
            result.update(await self._read_block(block))
        return {p.name: result[p.name] for p in self.map.points}

    async def read(self, name: str) -> Reading:
        """One point (one transaction).

        Raises:
            KeyError: Unknown point name.
        """
        return (await self._read_block(self._single[name]))[name]

    async def write(self, name: str, value: float) -> None:
        """Write a writable point (engineering units) and verify by reading it back.

        Raises:
            KeyError: Unknown point.
            ValueError: Point not writable, value not finite or not representable.
            WriteVerifyError: The read-back differs.
            TransportError: The write could not be delivered.
        """
        p = self.map.point(name)
        if not p.writable:
            raise ValueError(f"point {name!r} is not writable")
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} to {name!r}")
        if p.kind is RegisterKind.COIL:
            on = bool(value)
            await self.hub.write_coil(self.unit, p.address, on)
            (state,) = await self.hub.read_coils(self.unit, p.address, 1)
            if state != on:
                raise WriteVerifyError(self.name, name, on, state)
            return
        raw = (value - p.offset) / p.scale
        regs = encode(raw, p.dtype, p.word_order)
        if p.write_function == 6:
            await self.hub.write_register(self.unit, p.address, regs[0])
        else:
            await self.hub.write_registers(self.unit, p.address, regs)
        back = decode(
            await self.hub.read_holding_registers(self.unit, p.address, p.count),
            p.dtype,
            p.word_order,
        )
        expected = float32(raw) if p.dtype is RegisterType.FLOAT32 else round(raw)
        if back != expected:
            raise WriteVerifyError(self.name, name, value, float(back) * p.scale + p.offset)

    async def _read_block(self, block: _Block) -> dict[str, Reading]:
        try:
            if block.kind is RegisterKind.HOLDING:
                regs: Sequence[int] = await self.hub.read_holding_registers(
                    self.unit, block.address, block.count
                )
            elif block.kind is RegisterKind.INPUT:
                regs = await self.hub.read_input_registers(self.unit, block.address, block.count)
            elif block.kind is RegisterKind.COIL:
                regs = [
                    int(b) for b in await self.hub.read_coils(self.unit, block.address, block.count)
                ]
            else:
                regs = [
                    int(b)
                    for b in await self.hub.read_discrete_inputs(
                        self.unit, block.address, block.count
                    )
                ]
        except Exception as caught:
            exc = as_driver_error(caught, self.where)
            stamp = self._stamper.now()
            return {p.name: self._stamper.failed(p.unit, exc, at=stamp) for p in block.points}
        stamp = self._stamper.now()
        return {
            p.name: self._convert(p, regs[p.address - block.address :], stamp) for p in block.points
        }

    def _convert(self, p: RegisterPoint, regs: Sequence[int], stamp: Stamp) -> Reading:
        valid = self._valid[p.name]
        if p.kind in _BIT_KINDS:
            return self._stamper.value(float(regs[0]), p.unit, valid, at=stamp)
        raw = decode(regs, p.dtype, p.word_order)
        if p.sentinels:
            unsigned = RegisterType.UINT16 if p.count == 1 else RegisterType.UINT32
            raw_unsigned = int(decode(regs, unsigned, p.word_order))
            if raw_unsigned in p.sentinels or raw in p.sentinels:
                return self._stamper.bad(p.unit, f"sentinel: 0x{raw_unsigned:04X}", at=stamp)
        return self._stamper.value(float(raw) * p.scale + p.offset, p.unit, valid, at=stamp)


class RegisterMapConfig(OnBus):
    """Generic Modbus instrument described by a register map.

    ``roles`` maps a role to a point: a sensor role reads it; ``heater`` writes it, in W.
    """

    driver: Literal["register_map"]
    map: RegisterMap
    roles: dict[Role, str] = Field(default_factory=dict)

    def served_roles(self) -> list[str]:
        """The roles mapped to a point."""
        return list(self.roles)

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> ModbusRegisterDevice:
        """A :class:`ModbusRegisterDevice`; each mapped point reads a role or sets the heater."""
        device = ModbusRegisterDevice(
            self.hub(transports), self.unit, self.map, name=self.name, clock=clock
        )
        for role, point in self.roles.items():
            if role == "heater":
                roles.heater = _point_writer(device, point)
            else:
                roles.readers[role] = _point_reader(device, point)
        return device


def _point_reader(device: ModbusRegisterDevice, point: str) -> ReadFn:
    async def read() -> Reading:
        return await device.read(point)

    return read


def _point_writer(device: ModbusRegisterDevice, point: str) -> SetFn:
    """A writable point used as an analog output (e.g. heater power in W)."""

    async def write(value: float) -> None:
        await device.write(point, value)

    return write
