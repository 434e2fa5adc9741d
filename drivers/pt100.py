"""Low-cost multi-channel PT100 RS-485 transmitters (PTA8C04 / PTA8D08 class) on Modbus RTU.

Reference: docs/protocols.md §3.2 (eletechsup PTA8C04 documentation,
http://lamaplc.com/doku.php?id=sensor%3Apta8c04_pt100_modbus_modul). Defaults 9600 8N1, unit 1,
FC03; channel *n* temperature at wire address *n*, signed int16 in 0.1 degC. Broken or missing
probes read as sentinels (0x7FFF, 0x8000, 0x8001), which become BAD ``sentinel`` readings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.codec import INT16_SENTINELS, RegisterType, decode
from drivers.errors import as_driver_error
from drivers.quality import Stamp, Stamper, ValidRange
from drivers.reading import Reading
from drivers.registry import OnBus, RoleSet, Transports
from drivers.transport.modbus import ModbusHub
from drivers.units import DEG_C


class Pt100Transmitter:
    """One channel of a PT100 Modbus transmitter (int16 x 0.1 degC per channel).

    Reference: PTA8C04/PTA8D08 register map, docs/protocols.md §3.2.

    Args:
        hub: The bus.
        unit: Modbus unit id (default 1).
        channel: Channel number, 0-based (0..7); its register is ``base_address + channel``.
        name: Label used in reasons and logs.
        clock: Time source.
        base_address: Wire address of channel 0 (0 on PTA8C04).
        scale_c: degC per count (0.1).
        range_c: Valid temperature range, degC.
        extra_sentinels: Further raw register values meaning "no probe" for this model.
    """

    def __init__(
        self,
        hub: ModbusHub,
        unit: int = 1,
        channel: int = 0,
        *,
        name: str = "pt100",
        clock: Clock = DEFAULT_CLOCK,
        base_address: int = 0,
        scale_c: float = 0.1,
        range_c: tuple[float, float] = (-50.0, 200.0),
        extra_sentinels: Iterable[int] = (),
    ) -> None:
        if not 0 <= channel <= 63:
            raise ValueError("channel must be 0..63")
        self.hub = hub
        self.unit = unit
        self.channel = channel
        self.name = name
        self.base_address = base_address
        self.scale_c = scale_c
        self._stamper = Stamper(clock)
        self._range = ValidRange(*range_c)
        self._sentinels = dict(INT16_SENTINELS)
        self._sentinels.update({v & 0xFFFF: f"0x{v & 0xFFFF:04X}" for v in extra_sentinels})

    @property
    def where(self) -> str:
        """``"NAME (unit U on bus B)"`` for messages."""
        return f"{self.name} (unit {self.unit} on {self.hub.label})"

    async def start(self) -> None:
        """Nothing to prepare."""

    async def read_temp_c(self) -> Reading:
        """Temperature of this channel, degC."""
        try:
            (raw,) = await self.hub.read_holding_registers(
                self.unit, self.base_address + self.channel, 1
            )
        except Exception as exc:
            return self._stamper.failed(DEG_C, as_driver_error(exc, self.where))
        return self.convert(raw, self._stamper.now())

    async def read_all(self) -> dict[str, Reading]:
        """This channel's temperature (``hypoxia devices read``)."""
        return {"temp_c": await self.read_temp_c()}

    async def read_channels(self, count: int) -> list[Reading]:
        """Channels 0..count-1 in one transaction (channel-independent of ``self.channel``)."""
        try:
            regs = await self.hub.read_holding_registers(self.unit, self.base_address, count)
        except Exception as caught:
            exc = as_driver_error(caught, self.where)
            stamp = self._stamper.now()
            return [self._stamper.failed(DEG_C, exc, at=stamp)] * count
        stamp = self._stamper.now()
        return [self.convert(raw, stamp) for raw in regs]

    def convert(self, raw: int, stamp: Stamp) -> Reading:
        """Convert one raw register to a reading (sentinel -> BAD, else int16 x scale)."""
        if raw in self._sentinels:
            return self._stamper.bad(DEG_C, f"sentinel: {self._sentinels[raw]}", at=stamp)
        value = int(decode([raw], RegisterType.INT16)) * self.scale_c
        return self._stamper.value(value, DEG_C, self._range, at=stamp)


class Pt100Config(OnBus):
    """PT100 Modbus transmitter (int16 x scale)."""

    driver: Literal["pt100"]
    role: Literal["temperature", "temperature_secondary"] = "temperature"
    channel: int = Field(default=0, ge=0, le=15)
    scale_c: float = Field(default=0.1, gt=0, le=10)

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> Pt100Transmitter:
        """One channel of a :class:`Pt100Transmitter`, read for the temperature role."""
        pt100 = Pt100Transmitter(
            self.hub(transports),
            self.unit,
            self.channel,
            name=self.name,
            clock=clock,
            scale_c=self.scale_c,
        )
        roles.readers[self.role] = pt100.read_temp_c
        return pt100
