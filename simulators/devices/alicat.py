"""Simulated Alicat mass-flow controllers: ASCII serial (CR) and Modbus (2023 register map).

Flow comes from the :class:`PlantLink` (``flow_lpm(gas_line)``); setpoints and valve holds are
pushed into it (``set_flow_setpoint_lpm``). Frame layout per docs/protocols.md §4.1:
``A +014.62 +021.89 +000.00 +000.00 +078.95     N2`` then status codes. Modbus map per §4.2
(setpoint float ABCD @1009, gas @1199, status/P/T/flows @1200-1209, commands @999-1000).

Gas: ``gas=`` starts the instrument on any gas (a CO2 line's MFC on its Air calibration, to test
that the driver notices); ``gas_select=False`` emulates an instrument without gas selection (the
ASCII select commands go unanswered, the Modbus special command answers 32771).
"""

from __future__ import annotations

from typing import Literal, Self, cast

from pymodbus.simulator import DataType, SimData

from common.clock import DEFAULT_CLOCK, Clock
from drivers.alicat.common import (
    DEFAULT_GAS_OF_ROLE,
    GAS_NUMBERS,
    LPM_PER_UNIT,
    FlowUnit,
    gas_number,
)
from drivers.alicat.modbus import (
    REG_COMMAND,
    REG_GAS,
    REG_SETPOINT,
    STATUS_BITS,
    AlicatModbusConfig,
)
from drivers.alicat.serial_ascii import AlicatSerialConfig
from drivers.codec import RegisterType, WordOrder, decode, encode
from simulators.devices.ascii_port import AsciiInstrumentSim
from simulators.devices.faults import Faults
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim, overlaps, put

STANDARD_PSIA = 14.696
GAS_OF_ROLE = DEFAULT_GAS_OF_ROLE
"""Plant gas line fed by the MFC of each mixer role."""
Hold = Literal["current", "closed"] | None


class AlicatState:
    """Device state shared by the ASCII and Modbus front ends.

    Attributes:
        setpoint: Setpoint in device units (SLPM or SCCM).
        gas: Selected gas number.
        hold: ``None``, ``"current"`` (valve frozen) or ``"closed"``.
        locked: Front panel locked (``LCK``).
        extra_status: Status codes to add to every frame (fault injection, e.g. ``{"MOV"}``).
        pressure_psia: Reported absolute pressure.
        gas_temp_c: Reported gas temperature.
        gas_select: False: the instrument cannot change its gas (selection refused).
    """

    def __init__(
        self,
        link: PlantLink,
        gas_line: str,
        faults: Faults,
        *,
        full_scale: float,
        flow_unit: FlowUnit,
        gas: int,
        gas_select: bool = True,
    ) -> None:
        self.link = link
        self.gas_line = gas_line
        self.faults = faults
        self.full_scale = full_scale
        self.flow_unit: FlowUnit = flow_unit
        self.to_lpm = LPM_PER_UNIT[flow_unit]
        self.gas_select = gas_select
        self.setpoint = 0.0
        self.gas = gas
        self.hold: Hold = None
        self.locked = False
        self.extra_status: set[str] = set()
        self.pressure_psia = 14.70
        self.gas_temp_c = 22.0
        self._held_flow_lpm = 0.0

    def mass_flow(self) -> float:
        """Measured mass flow, device units."""
        lpm = self.faults.measure("flow", self.link.flow_lpm(self.gas_line))
        return lpm / self.to_lpm

    def vol_flow(self, mass: float) -> float:
        """Volumetric flow at line conditions, device units."""
        return mass * (273.15 + self.gas_temp_c) / 273.15 * STANDARD_PSIA / self.pressure_psia

    def status(self) -> list[str]:
        """Status codes currently shown, sorted."""
        codes = set(self.extra_status)
        if self.hold is not None:
            codes.add("HLD")
        if self.locked:
            codes.add("LCK")
        return sorted(codes)

    def set_setpoint(self, value: float) -> bool:
        """Accept a setpoint in device units (False if out of range)."""
        if not 0.0 <= value <= self.full_scale:
            return False
        if self.faults.stuck:
            return True  # acknowledged, no effect
        self.setpoint = value
        if self.hold is None:
            self.link.set_flow_setpoint_lpm(self.gas_line, value * self.to_lpm)
        return True

    def set_hold(self, hold: Hold) -> None:
        """Change the valve hold state and tell the plant."""
        if self.faults.stuck:
            return
        if hold == "closed":
            self.link.set_flow_setpoint_lpm(self.gas_line, 0.0)
        elif hold == "current":
            self.link.set_flow_setpoint_lpm(self.gas_line, self.link.flow_lpm(self.gas_line))
        else:
            self.link.set_flow_setpoint_lpm(self.gas_line, self.setpoint * self.to_lpm)
        self.hold = hold

    def set_gas(self, number: int) -> bool:
        """Select a gas (False if unknown or the instrument cannot select gases)."""
        if number not in GAS_NUMBERS or not self.gas_select:
            return False
        if not self.faults.stuck:
            self.gas = number
        return True


class AlicatAsciiSim(AsciiInstrumentSim):
    """Alicat MC controller on the ASCII protocol (answers only its own unit id).

    Args:
        link: Plant flows.
        gas_line: Plant gas line this MFC feeds (``"N2"``...).
        unit_id: Letter A-Z.
        full_scale: Full scale in device units.
        flow_unit: ``"SLPM"`` or ``"SCCM"``.
        gas: Initially selected gas number (8 = N2) -- any gas, to start on a wrong one.
        gas_select: False: ``G``/``GS`` with an argument go unanswered (no gas selection).
        clock: Time source for faults.

    Attributes:
        state: The shared :class:`AlicatState` (setpoint, gas, hold, ``extra_status``).
    """

    eol = "\r"

    def __init__(
        self,
        link: PlantLink,
        gas_line: str,
        *,
        unit_id: str = "A",
        full_scale: float = 5.0,
        flow_unit: FlowUnit = "SLPM",
        gas: int = 8,
        gas_select: bool = True,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        super().__init__(clock=clock)
        self.unit_id = unit_id.upper()
        self.state = AlicatState(
            link,
            gas_line,
            self.faults,
            full_scale=full_scale,
            flow_unit=flow_unit,
            gas=gas,
            gas_select=gas_select,
        )

    @classmethod
    def for_config(cls, cfg: AlicatSerialConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``alicat_serial`` entry, on its role's gas line."""
        return cls(
            link,
            GAS_OF_ROLE[cfg.role],
            unit_id=cfg.unit_id,
            full_scale=cfg.full_scale_lpm,
            gas=gas_number(cfg.expected_gas()),
            clock=clock,
        )

    def frame(self) -> str:
        """The current data frame."""
        s = self.state
        mass = s.mass_flow()
        numbers = (s.pressure_psia, s.gas_temp_c, s.vol_flow(mass), mass, s.setpoint)
        text = " ".join(f"{n:+07.2f}" for n in numbers)
        line = f"{self.unit_id} {text} {GAS_NUMBERS[s.gas]:>6}"
        return " ".join([line, *s.status()])

    def handle(self, command: str) -> list[str]:
        """Answer a command addressed to this unit; ignore others; ``?`` if not understood."""
        if not command or command[0].upper() != self.unit_id:
            return []
        body = command[1:].strip().upper()
        if body == "VE":
            return [f"{self.unit_id}   10v20.0-R24 Jan  9 2025,15:04:07"]
        if body == "FPF 5":  # full scale of statistic 5 (mass flow); the unit code is not emulated
            s = self.state
            return [f"{self.unit_id} 5 {s.full_scale:.4f} 0 {s.flow_unit}"]
        if body.startswith("G") and body[1:].strip("S ").isdigit() and not self.state.gas_select:
            return []  # a feature the instrument lacks: ignored silently (docs/protocols.md §4.1)
        if body.startswith("GS"):
            arg = body[2:].strip()
            ok = not arg or self._gas(arg)  # "GS" alone queries the active gas
            gas = GAS_NUMBERS[self.state.gas]
            return [f"{self.unit_id} {self.state.gas} {gas} {gas}"] if ok else ["?"]
        return [self.frame()] if self._apply(body) else ["?"]

    def _apply(self, body: str) -> bool:
        s = self.state
        holds: dict[str, Hold] = {"HP": "current", "HC": "closed", "C": None}
        if body in holds:
            s.set_hold(holds[body])
        elif body in ("L", "U"):
            s.locked = body == "L"
        elif body.isdigit():  # legacy integer setpoint, 64000 = full scale
            return s.set_setpoint(int(body) / 64000.0 * s.full_scale)
        elif body.startswith("S"):
            return self._setpoint(body[1:])
        elif body.startswith("G"):
            return self._gas(body[1:])
        elif body not in ("", "V", "T"):
            return False
        return True

    def _setpoint(self, arg: str) -> bool:
        try:
            value = float(arg)
        except ValueError:
            return False
        return self.state.set_setpoint(value)

    def _gas(self, arg: str) -> bool:
        arg = arg.strip()
        return arg.isdigit() and self.state.set_gas(int(arg))


_F32 = RegisterType.FLOAT32
_ABCD = WordOrder.BIG
_MEAS = REG_GAS + 1  # status, P, T, vol, mass: 10 registers


class AlicatModbusSim(ModbusDeviceSim):
    """Alicat controller on Modbus (2023 map; floats ABCD; special commands @999).

    Args:
        link: Plant flows.
        gas_line: Plant gas line this MFC feeds.
        unit: Modbus unit id.
        full_scale: Full scale in device units.
        flow_unit: ``"SLPM"`` or ``"SCCM"``.
        gas: Initially selected gas number -- any gas, to start on a wrong one.
        gas_select: False: special command 1 answers 32771 (feature unsupported).
        clock: Time source for faults.

    Attributes:
        state: The shared :class:`AlicatState`.
    """

    def __init__(
        self,
        link: PlantLink,
        gas_line: str,
        *,
        unit: int = 1,
        full_scale: float = 5.0,
        flow_unit: FlowUnit = "SLPM",
        gas: int = 8,
        gas_select: bool = True,
        clock: Clock = DEFAULT_CLOCK,
    ) -> None:
        super().__init__(unit, clock=clock)
        self.state = AlicatState(
            link,
            gas_line,
            self.faults,
            full_scale=full_scale,
            flow_unit=flow_unit,
            gas=gas,
            gas_select=gas_select,
        )

    @classmethod
    def for_config(cls, cfg: AlicatModbusConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``alicat_modbus`` entry, on its role's gas line."""
        return cls(
            link,
            GAS_OF_ROLE[cfg.role],
            unit=cfg.unit,
            full_scale=cfg.full_scale_lpm,
            gas=gas_number(cfg.expected_gas()),
            clock=clock,
        )

    def build(self) -> list[SimData]:
        """Command pair @999, setpoint @1009, gas @1199, read-only measurements @1200."""
        return [
            SimData(REG_COMMAND, values=[0, 0], datatype=DataType.REGISTERS),
            SimData(REG_SETPOINT, values=[0, 0], datatype=DataType.REGISTERS),
            SimData(REG_GAS, values=[self.state.gas], datatype=DataType.REGISTERS),
            SimData(_MEAS, values=[0] * 10, datatype=DataType.REGISTERS, readonly=True),
        ]

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        """Refresh gas, status, P, T, flows and setpoint."""
        s = self.state
        put(regs, start, REG_GAS, [s.gas])
        put(regs, start, REG_SETPOINT, encode(s.setpoint, _F32, _ABCD))
        if not overlaps(address, count, _MEAS, 10):
            return
        flags = 0
        for bit, code in STATUS_BITS.items():
            if code in s.status() and not (code in {"TOV", "VOV", "MOV"} and bit % 2):
                flags |= 1 << bit
        mass = s.mass_flow()
        values = [s.pressure_psia, s.gas_temp_c, s.vol_flow(mass), mass]
        block = encode(flags, RegisterType.UINT32, _ABCD)
        for value in values:
            block += encode(value, _F32, _ABCD)
        put(regs, start, _MEAS, block)

    def on_write(
        self, fc: int, start: int, address: int, regs: list[int], values: list[int] | list[bool]
    ) -> int | None:
        """Setpoint, gas register and special commands; FC16 only (exception 1 otherwise)."""
        if fc != 16:
            return 1
        words = [int(v) for v in values]
        s = self.state
        if address == REG_SETPOINT and len(words) == 2:
            return None if s.set_setpoint(float(decode(words, _F32, _ABCD))) else 3
        if address == REG_GAS and len(words) == 1:
            return None if s.set_gas(words[0]) else 3
        if address == REG_COMMAND and len(words) == 2:
            cast("list[int]", values)[0] = self._special(words[0], words[1])
            return None
        return 2

    def _special(self, command: int, argument: int) -> int:
        s = self.state
        if command == 1:
            if not s.gas_select:
                return 32771  # requested feature unsupported
            return 0 if s.set_gas(argument) else 32770
        if command == 6:
            holds: dict[int, Hold] = {0: None, 1: "closed", 2: "current"}
            if argument not in holds:
                return 32770
            s.set_hold(holds[argument])
            return 0
        if command in (4, 5, 12):
            return 0
        return 32769
