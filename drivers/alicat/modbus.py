"""Alicat mass-flow controller over Modbus RTU or TCP (firmware with the 2023 register map).

Reference: docs/protocols.md §4.2; Alicat "Standard Devices" user manual, Modbus RTU chapter
(https://manualshive.com/en/manual/halma/alicat-scientific-m-series/3461533?page=34, p.35 for
special commands). Manual register numbers are 1-based; wire address = number - 1. Floats are
big-endian, most-significant word first (ABCD). Writes use FC16 only.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

from common.clock import DEFAULT_CLOCK, Clock
from drivers.alicat.common import (
    DEFAULT_BAD_STATUS,
    GAS_NUMBERS,
    LPM_PER_UNIT,
    AlicatMixerFields,
    AlicatSample,
    FlowUnit,
    all_bad,
    apply_status,
    check_gas,
    ensure_gas,
    gas_name,
    gas_number,
)
from drivers.base import GasCheck, GasReport
from drivers.codec import RegisterType, WordOrder, decode, encode, float32
from drivers.errors import ProtocolError, WriteVerifyError, as_driver_error
from drivers.quality import Stamper, ValidRange
from drivers.reading import Reading
from drivers.registry import OnBus, RoleSet, Transports
from drivers.transport.modbus import ModbusHub
from drivers.units import DEG_C, LPM, PSIA

REG_COMMAND = 999
"""Wire address of the special-command id (manual 1000); the argument follows at 1000."""
REG_SETPOINT = 1009
"""Wire address of the setpoint float (manual 1010-1011)."""
REG_GAS = 1199
"""Wire address of the gas number (manual 1200); status, P, T, flows follow."""
READ_BLOCK = 11
"""Registers read per poll from :data:`REG_GAS`: gas, status(2), P(2), T(2), vol(2), mass(2)."""

CMD_CHANGE_GAS = 1
CMD_VALVE = 6
VALVE_CANCEL, VALVE_HOLD_CLOSED, VALVE_HOLD_CURRENT = 0, 1, 2

RESULT_CODES = {
    32769: "invalid command id",
    32770: "invalid setting",
    32771: "requested feature unsupported",
    32772: "invalid gas mix index",
    32773: "invalid gas mix constituent",
    32774: "invalid gas mix percentage",
}

STATUS_BITS: dict[int, str] = {
    0: "TOV",
    1: "TOV",
    2: "VOV",
    3: "VOV",
    4: "MOV",
    5: "MOV",
    6: "POV",
    7: "OVR",
    8: "HLD",
    9: "ADC",
    10: "EXH",
    11: "OPL",
    12: "TMF",
    13: "ABT",
}
"""Status register bit -> status code (as in the ASCII frame; 13 "measurement aborted" = ABT)."""

_F32 = RegisterType.FLOAT32
_ABCD = WordOrder.BIG


def gas_label(number: int) -> str:
    """Short name of a gas number; ``"gas #240"`` for numbers outside the table (mixes)."""
    return GAS_NUMBERS.get(number, f"gas #{number}")


def status_codes(flags: int) -> frozenset[str]:
    """Status codes set in the 32-bit status register value."""
    return frozenset(code for bit, code in STATUS_BITS.items() if flags >> bit & 1)


class AlicatModbus:
    """Alicat mass-flow controller on Modbus (RTU or TCP), 2023 register map.

    Reference: Alicat Standard Devices manual (Modbus chapter), docs/protocols.md §4.2.

    A poll is two transactions: the 11-register block at 1199 (gas, status, P, T, flows) and the
    setpoint at 1009. Special commands write ``[command id, argument]`` to 999-1000 with FC16;
    the effect is then verified through the gas register or the HLD status bit. The result code
    is read back from 999 and codes >= 32769 raise (which register holds the result is not
    stated in the manual we have; the verified effect is authoritative). The 2023 map has no
    full-scale register, so :meth:`read_gas` reports the gas only. With ``expected_gas`` set, a
    poll reporting another gas makes the flows BAD (``gas_mismatch``).

    Args:
        hub: The bus.
        unit: Modbus unit id (default 1).
        full_scale_lpm: Full-scale mass flow, standard L/min.
        name: Label used in reasons and logs.
        flow_unit: The device's engineering flow unit.
        clock: Time source.
        bad_status: Status codes that make the affected readings BAD.
        verify_tolerance_fs: Allowed setpoint read-back error as a fraction of full scale.
        expected_gas: The gas it must run on (``"CO2"``); ``None`` skips the per-read check.
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 1,
        *,
        full_scale_lpm: float,
        name: str = "alicat",
        flow_unit: FlowUnit = "SLPM",
        clock: Clock = DEFAULT_CLOCK,
        bad_status: frozenset[str] = DEFAULT_BAD_STATUS,
        verify_tolerance_fs: float = 0.001,
        expected_gas: str | None = None,
    ) -> None:
        if not full_scale_lpm > 0:
            raise ValueError("full_scale_lpm must be > 0")
        self.hub = hub
        self.unit = unit
        self.full_scale_lpm = full_scale_lpm
        self.name = name
        self.flow_unit: FlowUnit = flow_unit
        self.bad_status = bad_status
        self.verify_tolerance_fs = verify_tolerance_fs
        self.expected_gas = None if expected_gas is None else gas_name(expected_gas)
        self._stamper = Stamper(clock)
        self._to_lpm = LPM_PER_UNIT[flow_unit]

    @property
    def where(self) -> str:
        """``"bus plant-tcp, unit 1"``."""
        return f"{self.hub.label}, unit {self.unit}"

    async def start(self) -> None:
        """Nothing to prepare (the device is always in Modbus mode)."""

    async def read(self) -> AlicatSample:
        """Poll gas, status, pressure, temperature, flows and setpoint; never raises."""
        try:
            return await self._read()
        except Exception as exc:
            error = as_driver_error(exc, f"{self.name} ({self.where})")
            return all_bad(self._stamper, error.reason)

    async def _read(self) -> AlicatSample:
        regs = await self.hub.read_holding_registers(self.unit, REG_GAS, READ_BLOCK)
        stamp = self._stamper.now()
        sp_regs = await self.hub.read_holding_registers(self.unit, REG_SETPOINT, 2)
        fs = self.full_scale_lpm
        flow_valid = ValidRange(-0.05 * fs, 1.3 * fs)
        flags = int(decode(regs[1:3], RegisterType.UINT32, _ABCD))
        codes = status_codes(flags)

        def f32(offset: int) -> float:
            return float(decode(regs[offset : offset + 2], _F32, _ABCD))

        v = self._stamper.value
        readings: dict[str, Reading] = {
            "pressure_psia": v(f32(3), PSIA, ValidRange(0.0, 250.0), at=stamp),
            "temp_c": v(f32(5), DEG_C, ValidRange(-30.0, 90.0), at=stamp),
            "vol_flow_lpm": v(f32(7) * self._to_lpm, LPM, flow_valid, at=stamp),
            "flow_lpm": v(f32(9) * self._to_lpm, LPM, flow_valid, at=stamp),
            "setpoint_lpm": v(
                float(decode(sp_regs, _F32, _ABCD)) * self._to_lpm,
                LPM,
                ValidRange(0.0, fs * 1.0001),
                at=stamp,
            ),
        }
        readings = apply_status(readings, codes, self.bad_status, self._stamper, stamp)
        sample = AlicatSample(**readings, gas=gas_label(regs[0]), status=codes)
        return check_gas(sample, self.expected_gas, self._stamper, f"{self.name} ({self.where})")

    async def read_flow_lpm(self) -> Reading:
        """Mass flow, standard L/min."""
        return (await self.read()).flow_lpm

    async def read_all(self) -> dict[str, Reading]:
        """The mass flow (``hypoxia devices read``)."""
        return {"flow_lpm": await self.read_flow_lpm()}

    async def set_flow_lpm(self, lpm: float) -> None:
        """Write the setpoint (float ABCD at 1009) and verify by reading it back.

        Raises:
            ValueError: Outside 0..full scale or not finite.
            WriteVerifyError: Read-back differs by more than the tolerance.
            TransportError: The write could not be delivered.
        """
        if not (math.isfinite(lpm) and 0.0 <= lpm <= self.full_scale_lpm):
            raise ValueError(f"setpoint {lpm!r} L/min outside 0..{self.full_scale_lpm:g}")
        device_value = float32(lpm / self._to_lpm)
        await self.hub.write_registers(self.unit, REG_SETPOINT, encode(device_value, _F32, _ABCD))
        regs = await self.hub.read_holding_registers(self.unit, REG_SETPOINT, 2)
        readback = float(decode(regs, _F32, _ABCD)) * self._to_lpm
        tolerance = max(self.verify_tolerance_fs * self.full_scale_lpm, 1e-9)
        if not (math.isfinite(readback) and abs(readback - lpm) <= tolerance):
            raise WriteVerifyError(self.name, "setpoint_lpm", lpm, readback)

    async def select_gas(self, gas: int | str) -> None:
        """Select the gas (special command 1) and verify the gas register.

        Raises:
            ValueError: Unknown gas.
            ProtocolError: The device returned an error result code.
            WriteVerifyError: The gas register shows a different gas.
        """
        number = gas_number(gas)
        await self._special(CMD_CHANGE_GAS, number)
        (readback,) = await self.hub.read_holding_registers(self.unit, REG_GAS, 1)
        if readback != number:
            raise WriteVerifyError(self.name, "gas", gas_label(number), gas_label(readback))

    async def read_gas(self) -> GasReport:
        """The gas register (1199); the full scale is not in the Modbus map (``None``).

        Raises:
            DriverError: The read failed.
        """
        (number,) = await self.hub.read_holding_registers(self.unit, REG_GAS, 1)
        return GasReport(gas_label(number), None)

    async def ensure_gas(self, gas: str, *, select: bool = True) -> GasCheck:
        """Run on ``gas``: select it (special command 1) if the gas register differs.

        Reads register 1199, selects ``gas`` if different and ``select`` allows, and verifies by
        reading the register again. Never raises for device faults: the check's ``reason`` says
        what is wrong.

        Raises:
            ValueError: Unknown gas name.
        """
        return await ensure_gas(self, gas, select=select)

    async def hold(self) -> None:
        """Hold the valve at its current position; verified by the HLD status bit."""
        await self._valve(VALVE_HOLD_CURRENT, held=True)

    async def hold_closed(self) -> None:
        """Close the valve regardless of setpoint; verified by the HLD status bit."""
        await self._valve(VALVE_HOLD_CLOSED, held=True)

    async def cancel_hold(self) -> None:
        """Cancel a valve hold; verified by the HLD status bit being clear."""
        await self._valve(VALVE_CANCEL, held=False)

    async def _valve(self, argument: int, *, held: bool) -> None:
        await self._special(CMD_VALVE, argument)
        regs = await self.hub.read_holding_registers(self.unit, REG_GAS + 1, 2)
        is_held = "HLD" in status_codes(int(decode(regs, RegisterType.UINT32, _ABCD)))
        if is_held != held:
            raise WriteVerifyError(self.name, "valve hold", held, is_held)

    async def _special(self, command: int, argument: int) -> None:
        await self.hub.write_registers(self.unit, REG_COMMAND, [command, argument])
        (result,) = await self.hub.read_holding_registers(self.unit, REG_COMMAND, 1)
        if result in RESULT_CODES:
            raise ProtocolError(
                f"{self.name} ({self.where}): special command {command}({argument}) failed: "
                f"{result} {RESULT_CODES[result]}"
            )


class AlicatModbusConfig(OnBus, AlicatMixerFields):
    """Alicat mass-flow controller over Modbus RTU/TCP.

    ``gas`` and ``gas_select`` as for ``alicat_serial``.
    """

    driver: Literal["alicat_modbus"]

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> AlicatModbus:
        """An :class:`AlicatModbus` serving its mixer role."""
        gas = self.expected_gas()
        mfc = AlicatModbus(
            self.hub(transports),
            self.unit,
            full_scale_lpm=self.full_scale_lpm,
            name=self.name,
            clock=clock,
            expected_gas=gas,
        )
        roles.mixers[self.role] = mfc
        roles.gas_checks[self.role] = functools.partial(
            mfc.ensure_gas, gas, select=self.gas_select == "select"
        )
        return mfc
