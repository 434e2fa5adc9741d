"""Vaisala Modbus RTU probes: GMP251/GMP252 CARBOCAP CO2 and HMP-series humidity/temperature.

Reference: docs/protocols.md §2.1 and §3.1; GMP252 user guide M211897EN (Appendix A, Modbus
reference, https://docs.vaisala.com/r/M211897EN-D/en-US), GMP251 user guide M211799EN, HMP
series manuals. Defaults 19200 8N2, unit id 240, FC03 read / FC16 write. Floats are IEEE-754
with the **least-significant word first**; missing data reads as NaN (not as an exception).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import RegisterType, WordOrder, decode, encode, float32
from drivers.errors import WriteVerifyError, as_driver_error
from drivers.quality import Stamper, ValidRange
from drivers.reading import Reading
from drivers.registry import OnBus, RoleSet, Transports
from drivers.transport.modbus import ModbusHub
from drivers.units import DEG_C, PCT, PCT_RH, PPM_PER_PCT

GMP_MEASUREMENTS = 0x0000
"""Wire address of CO2 ppm (float), then compensation T and probe T (floats, degC)."""
GMP_STATUS = 0x0800
"""Wire address of the device status (0x0800) and CO2 status (0x0801) registers."""
GMP_VOLATILE_O2_COMPENSATION = 0x020E
"""Wire address of the volatile O2 compensation value (float, vol-%, cleared at reset)."""
GMP_O2_COMPENSATION_MODE = 0x0307
"""Wire address of the O2 compensation mode (0 off, 1 on), stored in EEPROM."""

DEVICE_STATUS_BITS = {1: "critical error", 2: "error", 4: "warning"}
CO2_STATUS_TEXT = {2: "reading not reliable (start-up)", 256: "measurement not ready (start-up)"}

_F32 = RegisterType.FLOAT32
_LSW = WordOrder.LITTLE


@dataclass(frozen=True, slots=True)
class GmpSample:
    """One GMP25x poll.

    Attributes:
        co2_pct: CO2, vol-%.
        temp_c: Probe temperature, degC.
        device_status: Device status register (0 OK; 1 critical, 2 error, 4 warning, summed).
        co2_status: CO2 status register (0 OK, 2 not reliable, 256 not ready).
    """

    co2_pct: Reading
    temp_c: Reading
    device_status: int | None
    co2_status: int | None


class VaisalaGMP25x:
    """Vaisala GMP251 (0-20 % CO2) or GMP252 (0-1 %, extended to 3 %) probe on Modbus RTU.

    Reference: Vaisala M211897EN / M211799EN Appendix A and docs/protocols.md §2.1. The float
    CO2 register is in ppm on both models (GMP251 per a third-party copy of M211799EN; verify on
    hardware).

    Each :meth:`read` is two transactions: measurements (6 registers @0x0000) and statuses
    (2 registers @0x0800). Device status "critical error"/"error" and any non-zero CO2 status make
    the readings BAD; "warning" alone keeps them GOOD (the status is reported in the sample).

    Args:
        hub: The bus.
        unit: Modbus unit id (default 240).
        name: Label used in reasons and logs.
        model: ``"GMP251"`` or ``"GMP252"`` (sets the default valid range).
        clock: Time source.
        range_pct: Valid CO2 range, vol-%; defaults to the model's measurement range.
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 240,
        *,
        name: str = "gmp25x",
        model: Literal["GMP251", "GMP252"] = "GMP251",
        clock: Clock = DEFAULT_CLOCK,
        range_pct: tuple[float, float] | None = None,
    ) -> None:
        self.hub = hub
        self.unit = unit
        self.name = name
        self.model = model
        self._stamper = Stamper(clock)
        default = (0.0, 20.0) if model == "GMP251" else (0.0, 3.0)
        self._range = ValidRange(*(range_pct or default))
        self._temp_range = ValidRange(-40.0, 80.0)

    @property
    def where(self) -> str:
        """``"NAME (unit U on bus B)"`` for messages."""
        return f"{self.name} (unit {self.unit} on {self.hub.label})"

    async def start(self) -> None:
        """Nothing to prepare (the probe measures continuously)."""

    async def read(self) -> GmpSample:
        """Poll CO2, probe temperature and statuses; never raises for device faults."""
        try:
            regs = await self.hub.read_holding_registers(self.unit, GMP_MEASUREMENTS, 6)
            stamp = self._stamper.now()
            device_status, co2_status = await self.hub.read_holding_registers(
                self.unit, GMP_STATUS, 2
            )
        except Exception as caught:
            exc = as_driver_error(caught, self.where)
            stamp = self._stamper.now()
            return GmpSample(
                self._stamper.failed(PCT, exc, at=stamp),
                self._stamper.failed(DEG_C, exc, at=stamp),
                None,
                None,
            )
        co2_ppm = float(decode(regs[0:2], _F32, _LSW))
        probe_t = float(decode(regs[4:6], _F32, _LSW))
        reason = _status_reason(device_status, co2_status)
        if reason:
            co2 = self._stamper.bad(PCT, reason, at=stamp)
            temp = self._stamper.bad(DEG_C, reason, at=stamp)
        else:
            co2 = self._stamper.value(co2_ppm / PPM_PER_PCT, PCT, self._range, at=stamp)
            temp = self._stamper.value(probe_t, DEG_C, self._temp_range, at=stamp)
        return GmpSample(co2, temp, device_status, co2_status)

    async def read_co2_pct(self) -> Reading:
        """CO2, vol-%."""
        return (await self.read()).co2_pct

    async def read_temp_c(self) -> Reading:
        """Probe temperature, degC (the gas temperature at the probe, -40..+80)."""
        return (await self.read()).temp_c

    async def read_all(self) -> dict[str, Reading]:
        """The CO2 (``hypoxia devices read``)."""
        return {"co2_pct": await self.read_co2_pct()}

    async def write_o2_compensation(self, o2_pct: float) -> None:
        """Write the measured O2 into the *volatile* O2-compensation register and verify it.

        Call this every few cycles with the chamber O2 so the NDIR reading is compensated for
        hypoxia; the volatile register (0x020E) is RAM, so frequent writes do not wear the EEPROM.
        O2 compensation must be enabled once with :meth:`set_o2_compensation_mode`.

        Args:
            o2_pct: Chamber O2, vol-% (0-100).

        Raises:
            ValueError: ``o2_pct`` outside 0-100 or not finite.
            WriteVerifyError: The read-back differs from the written float32.
            TransportError: The write could not be delivered.
        """
        if not (math.isfinite(o2_pct) and 0.0 <= o2_pct <= 100.0):
            raise ValueError(f"O2 compensation {o2_pct!r} % outside 0..100")
        addr = GMP_VOLATILE_O2_COMPENSATION
        await self.hub.write_registers(self.unit, addr, encode(o2_pct, _F32, _LSW))
        readback = float(
            decode(await self.hub.read_holding_registers(self.unit, addr, 2), _F32, _LSW)
        )
        if not math.isclose(readback, float32(o2_pct), rel_tol=1e-6, abs_tol=1e-6):
            raise WriteVerifyError(self.name, "o2_compensation_pct", o2_pct, readback)

    async def set_o2_compensation_mode(self, enabled: bool) -> None:
        """Switch O2 compensation on or off (EEPROM register 0x0307: set once, not per cycle).

        Raises:
            WriteVerifyError: The read-back differs.
            TransportError: The write could not be delivered.
        """
        value = 1 if enabled else 0
        await self.hub.write_registers(self.unit, GMP_O2_COMPENSATION_MODE, [value])
        (readback,) = await self.hub.read_holding_registers(self.unit, GMP_O2_COMPENSATION_MODE, 1)
        if readback != value:
            raise WriteVerifyError(self.name, "o2_compensation_mode", value, readback)


def _status_reason(device_status: int, co2_status: int) -> str:
    if device_status & 0b11:
        texts = [t for bit, t in DEVICE_STATUS_BITS.items() if device_status & bit]
        return f"status: device status {device_status} ({', '.join(texts)})"
    if co2_status:
        text = CO2_STATUS_TEXT.get(co2_status, "not OK")
        return f"status: CO2 status {co2_status} ({text})"
    return ""


@dataclass(frozen=True, slots=True)
class HmpSample:
    """One HMP poll: relative humidity (%RH) and temperature (degC)."""

    rh_pct: Reading
    temp_c: Reading


class VaisalaHMP:
    """Vaisala HMP-series humidity and temperature probe (HMP4/5/7/8, HMP110 Modbus) on RTU.

    Reference: Vaisala HMP series user guide, Modbus register table (RH float @0x0000, T float
    @0x0002, least-significant word first) and docs/protocols.md §3.1. One transaction per
    read (4 registers @0x0000).

    Args:
        hub: The bus.
        unit: Modbus unit id (default 240).
        name: Label used in reasons and logs.
        clock: Time source.
        temp_range_c: Valid temperature range, degC (HMP110: -40..+80).
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 240,
        *,
        name: str = "hmp",
        clock: Clock = DEFAULT_CLOCK,
        temp_range_c: tuple[float, float] = (-40.0, 80.0),
    ) -> None:
        self.hub = hub
        self.unit = unit
        self.name = name
        self._stamper = Stamper(clock)
        self._temp_range = ValidRange(*temp_range_c)

    @property
    def where(self) -> str:
        """``"NAME (unit U on bus B)"`` for messages."""
        return f"{self.name} (unit {self.unit} on {self.hub.label})"

    async def start(self) -> None:
        """Nothing to prepare."""

    async def read(self) -> HmpSample:
        """Poll RH and temperature; never raises for device faults."""
        try:
            regs = await self.hub.read_holding_registers(self.unit, 0x0000, 4)
        except Exception as caught:
            exc = as_driver_error(caught, self.where)
            stamp = self._stamper.now()
            return HmpSample(
                self._stamper.failed(PCT_RH, exc, at=stamp),
                self._stamper.failed(DEG_C, exc, at=stamp),
            )
        stamp = self._stamper.now()
        rh = float(decode(regs[0:2], _F32, _LSW))
        temp = float(decode(regs[2:4], _F32, _LSW))
        return HmpSample(
            self._stamper.value(rh, PCT_RH, ValidRange(0.0, 100.0), at=stamp),
            self._stamper.value(temp, DEG_C, self._temp_range, at=stamp),
        )

    async def read_temp_c(self) -> Reading:
        """Temperature, degC."""
        return (await self.read()).temp_c

    async def read_all(self) -> dict[str, Reading]:
        """The temperature (``hypoxia devices read``)."""
        return {"temp_c": await self.read_temp_c()}


class Gmp25xConfig(OnBus):
    """Vaisala GMP251/252 CO2 probe (Modbus RTU); optionally fed the measured O2."""

    driver: Literal["vaisala_gmp25x"]
    role: Literal["co2", "co2_secondary"] = "co2"
    model: Literal["GMP251", "GMP252"] = "GMP252"
    o2_compensation: bool = Field(
        default=True, description="push the measured O2 when it changes (at most every cycle)"
    )

    read_transactions: ClassVar[int] = 2
    """A reading polls measurements and statuses: two Modbus transactions."""

    def write_transactions(self) -> int:
        """A verified O2-compensation write (write, read back) when compensation is on."""
        return 2 if self.o2_compensation else 0

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> VaisalaGMP25x:
        """A :class:`VaisalaGMP25x` read for the CO2 role (and fed O2 if configured)."""
        gmp = VaisalaGMP25x(
            self.hub(transports), self.unit, name=self.name, model=self.model, clock=clock
        )
        roles.readers[self.role] = gmp.read_co2_pct
        if self.o2_compensation:
            roles.o2_compensation.append(gmp)
        return gmp


class HmpConfig(OnBus):
    """Vaisala HMP temperature/humidity transmitter (Modbus RTU)."""

    driver: Literal["vaisala_hmp"]
    role: Literal["temperature", "temperature_secondary"] = "temperature"

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> VaisalaHMP:
        """A :class:`VaisalaHMP` read for the temperature role."""
        hmp = VaisalaHMP(self.hub(transports), self.unit, name=self.name, clock=clock)
        roles.readers[self.role] = hmp.read_temp_c
        return hmp
