"""Device catalogue: the site file's device entries and the factory that opens them.

Each entry names a ``driver`` (one class per instrument family), the bus or line it hangs on,
its unit id and options, and the **role** it plays for its reactor. :func:`open_devices` builds one
:class:`~drivers.transport.modbus.ModbusHub` per bus and one
:class:`~drivers.transport.serial_line.SerialLine` per line, shared by every device on them, and
returns a :class:`RoleSet`: role -> handle. The controller sees roles ("o2", "n2_mixer"), never
vendors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.alicat.modbus import AlicatModbus
from drivers.alicat.serial_ascii import AlicatSerial
from drivers.base import FlowController, SwitchedOutput
from drivers.clock import DEFAULT_CLOCK, Clock
from drivers.gss import GssCO2
from drivers.luminox import LuminOx
from drivers.pt100 import Pt100Transmitter
from drivers.reading import Quality, Reading
from drivers.register_map import ModbusRegisterDevice, RegisterMap
from drivers.relay_board import ModbusRelayBoard
from drivers.transport.modbus import ModbusHub
from drivers.transport.serial_line import SerialLine
from drivers.transport.settings import ModbusBusSettings, SerialLineSettings
from drivers.vaisala import VaisalaGMP25x, VaisalaHMP

SensorRole = Literal[
    "o2", "o2_secondary", "co2", "co2_secondary", "temperature", "temperature_secondary", "do"
]
MixerRole = Literal["n2_mixer", "air_mixer", "o2_mixer", "co2_mixer"]
OutputRole = Literal["heater", "harvest_pump"]
Role = Literal[SensorRole, MixerRole, OutputRole]

SENSOR_ROLES: tuple[str, ...] = (
    "o2",
    "o2_secondary",
    "co2",
    "co2_secondary",
    "temperature",
    "temperature_secondary",
    "do",
)
MIXER_ROLES: tuple[str, ...] = ("n2_mixer", "air_mixer", "o2_mixer", "co2_mixer")


class _Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="unique within the site")


class _OnLine(_Device):
    line: str = Field(min_length=1, description="name of a [lines.NAME] entry")


class _OnBus(_Device):
    bus: str = Field(min_length=1, description="name of a [buses.NAME] entry")
    unit: int = Field(ge=1, le=247, description="Modbus unit id")


class LuminOxConfig(_OnLine):
    """SST LuminOx O2 sensor (ASCII)."""

    driver: Literal["luminox"]
    role: Literal["o2", "o2_secondary"] = "o2"
    mode: Literal["poll", "stream"] = "poll"
    max_age_s: float = Field(default=3.0, gt=0, le=600)


class GssConfig(_OnLine):
    """GSS SprintIR / ExplorIR CO2 sensor (ASCII)."""

    driver: Literal["gss_co2"]
    role: Literal["co2", "co2_secondary"] = "co2"
    mode: Literal["poll", "stream"] = "poll"
    expected_multiplier: int | None = Field(default=None, ge=1, le=1000)


class Gmp25xConfig(_OnBus):
    """Vaisala GMP251/252 CO2 probe (Modbus RTU); optionally fed the measured O2."""

    driver: Literal["vaisala_gmp25x"]
    role: Literal["co2", "co2_secondary"] = "co2"
    model: Literal["GMP251", "GMP252"] = "GMP252"
    o2_compensation: bool = Field(default=True, description="push measured O2 every cycle")


class HmpConfig(_OnBus):
    """Vaisala HMP temperature/humidity transmitter (Modbus RTU)."""

    driver: Literal["vaisala_hmp"]
    role: Literal["temperature", "temperature_secondary"] = "temperature"


class Pt100Config(_OnBus):
    """PT100 Modbus transmitter (int16 x scale)."""

    driver: Literal["pt100"]
    role: Literal["temperature", "temperature_secondary"] = "temperature"
    channel: int = Field(default=0, ge=0, le=15)
    scale_c: float = Field(default=0.1, gt=0, le=10)


class AlicatSerialConfig(_OnLine):
    """Alicat mass-flow controller over ASCII serial."""

    driver: Literal["alicat_serial"]
    role: MixerRole
    unit_id: str = Field(default="A", pattern=r"^[A-Z]$")
    full_scale_lpm: float = Field(gt=0, le=10_000)


class AlicatModbusConfig(_OnBus):
    """Alicat mass-flow controller over Modbus RTU/TCP."""

    driver: Literal["alicat_modbus"]
    role: MixerRole
    full_scale_lpm: float = Field(gt=0, le=10_000)


class RelayBoardConfig(_OnBus):
    """Modbus relay board; ``outputs`` maps roles (heater, harvest_pump) to coil indexes."""

    driver: Literal["relay_board"]
    channels: int = Field(default=8, ge=1, le=64)
    outputs: dict[OutputRole, int] = Field(default_factory=dict)


class RegisterMapConfig(_OnBus):
    """Generic Modbus instrument described by a register map.

    ``roles`` maps a role to a point: a sensor role reads it; ``heater`` writes it, in W.
    """

    driver: Literal["register_map"]
    map: RegisterMap
    roles: dict[Role, str] = Field(default_factory=dict)


DeviceConfig = Annotated[
    LuminOxConfig
    | GssConfig
    | Gmp25xConfig
    | HmpConfig
    | Pt100Config
    | AlicatSerialConfig
    | AlicatModbusConfig
    | RelayBoardConfig
    | RegisterMapConfig,
    Field(discriminator="driver"),
]
"""Any device entry; pydantic picks the model from ``driver``."""


def device_roles(config: DeviceConfig) -> list[str]:
    """The roles a device entry serves."""
    if isinstance(config, RelayBoardConfig):
        return list(config.outputs)
    if isinstance(config, RegisterMapConfig):
        return list(config.roles)
    return [config.role]


ReadFn = Callable[[], Awaitable[Reading]]
SetFn = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class RoleSet:
    """One reactor's instruments by role.

    Attributes:
        readers: Sensor role -> coroutine returning a :class:`Reading`.
        mixers: Mixer role -> flow controller.
        heater: Sets heater power (W) or ``None``.
        pump: The harvest pump output, or ``None``.
        o2_compensation: CO2 probes that want the measured O2 written to them.
        devices: Device name -> driver object (for ``hypoxia devices read``).
    """

    readers: dict[str, ReadFn] = field(default_factory=dict)
    mixers: dict[str, FlowController] = field(default_factory=dict)
    heater: SetFn | None = None
    pump: SwitchedOutput | None = None
    o2_compensation: list[VaisalaGMP25x] = field(default_factory=list)
    devices: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class Transports:
    """Every bus and line of a site, opened lazily and closed together."""

    buses: dict[str, ModbusHub] = field(default_factory=dict)
    lines: dict[str, SerialLine] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        buses: dict[str, ModbusBusSettings],
        lines: dict[str, SerialLineSettings],
        clock: Clock = DEFAULT_CLOCK,
    ) -> Transports:
        """One hub per bus and one line per port (not opened yet)."""
        return cls(
            {n: ModbusHub(s, clock=clock, name=n) for n, s in buses.items()},
            {n: SerialLine(s, clock=clock, name=n) for n, s in lines.items()},
        )

    async def open(self, wait_s: float = 5.0) -> list[str]:
        """Open everything; return the names that could not be opened (they retry later)."""
        failed = []
        for name, hub in self.buses.items():
            try:
                await hub.connect(wait_s=wait_s)
            except Exception:  # a dead bus degrades its own devices only
                failed.append(name)
        for name, line in self.lines.items():
            try:
                await line.open(wait_s=wait_s)
            except Exception:  # likewise for a dead line
                failed.append(name)
        return failed

    async def close(self) -> None:
        """Close every bus and line."""
        for hub in self.buses.values():
            await hub.close()
        for line in self.lines.values():
            await line.close()


class _RegisterPoint:
    """A writable register-map point used as an analog output (e.g. heater power in W)."""

    def __init__(self, device: ModbusRegisterDevice, point: str) -> None:
        self.device = device
        self.point = point

    async def set_value(self, value: float) -> None:
        await self.device.write(self.point, value)


def open_devices(
    configs: list[DeviceConfig], transports: Transports, clock: Clock = DEFAULT_CLOCK
) -> RoleSet:
    """Instantiate the drivers of one reactor on shared transports and bind them to roles."""
    roles = RoleSet()
    for cfg in configs:
        roles.devices[cfg.name] = _open(cfg, transports, clock, roles)
    return roles


def _open_on_line(
    cfg: LuminOxConfig | GssConfig | AlicatSerialConfig,
    line: SerialLine,
    clock: Clock,
    roles: RoleSet,
) -> object:
    """The ASCII instruments."""
    if isinstance(cfg, LuminOxConfig):
        lox = LuminOx(line, name=cfg.name, mode=cfg.mode, clock=clock, max_age_s=cfg.max_age_s)
        roles.readers[cfg.role] = lox.read_o2_pct
        return lox
    if isinstance(cfg, GssConfig):
        gss = GssCO2(
            line,
            name=cfg.name,
            mode=cfg.mode,
            clock=clock,
            expected_multiplier=cfg.expected_multiplier,
        )
        roles.readers[cfg.role] = gss.read_co2_pct
        return gss
    mfc = AlicatSerial(
        line, cfg.unit_id, clock=clock, full_scale_lpm=cfg.full_scale_lpm, name=cfg.name
    )
    roles.mixers[cfg.role] = mfc
    return mfc


def _open(cfg: DeviceConfig, t: Transports, clock: Clock, roles: RoleSet) -> object:
    """Build one driver and bind it to its role(s) in ``roles``."""
    if isinstance(cfg, LuminOxConfig | GssConfig | AlicatSerialConfig):
        return _open_on_line(cfg, t.lines[cfg.line], clock, roles)
    hub = t.buses[cfg.bus]
    if isinstance(cfg, Gmp25xConfig):
        gmp = VaisalaGMP25x(hub, cfg.unit, name=cfg.name, model=cfg.model, clock=clock)
        roles.readers[cfg.role] = gmp.read_co2_pct
        if cfg.o2_compensation:
            roles.o2_compensation.append(gmp)
        return gmp
    if isinstance(cfg, HmpConfig | Pt100Config):
        temp = (
            VaisalaHMP(hub, cfg.unit, name=cfg.name, clock=clock)
            if isinstance(cfg, HmpConfig)
            else Pt100Transmitter(
                hub, cfg.unit, cfg.channel, name=cfg.name, clock=clock, scale_c=cfg.scale_c
            )
        )
        roles.readers[cfg.role] = temp.read_temp_c
        return temp
    if isinstance(cfg, AlicatModbusConfig):
        mfc = AlicatModbus(
            hub, cfg.unit, full_scale_lpm=cfg.full_scale_lpm, name=cfg.name, clock=clock
        )
        roles.mixers[cfg.role] = mfc
        return mfc
    if isinstance(cfg, RelayBoardConfig):
        board = ModbusRelayBoard(hub, cfg.unit, channels=cfg.channels, name=cfg.name)
        for out_role, index in cfg.outputs.items():
            output = board.output(index, f"{cfg.name}:{out_role}")
            if out_role == "harvest_pump":
                roles.pump = output
            else:
                roles.heater = _relay_heater(output)
        return board
    generic = ModbusRegisterDevice(hub, cfg.unit, cfg.map, name=cfg.name, clock=clock)
    for role, point in cfg.roles.items():
        if role == "heater":
            roles.heater = _RegisterPoint(generic, point).set_value
        else:
            roles.readers[role] = _point_reader(generic, point)
    return generic


def _point_reader(device: ModbusRegisterDevice, point: str) -> ReadFn:
    async def read() -> Reading:
        return await device.read(point)

    return read


def _relay_heater(output: SwitchedOutput) -> SetFn:
    """On/off heater: on for any positive power request (a thermostat-style relay)."""

    async def set_power(power_w: float) -> None:
        await output.set(power_w > 0.0)  # a failed read-back raises: the cycle reports it

    return set_power


async def read_device(device: object, clock: Clock = DEFAULT_CLOCK) -> dict[str, Reading]:
    """Everything a device can report, by quantity name (``hypoxia devices read``)."""
    if isinstance(device, LuminOx):
        return {"o2_pct": await device.read_o2_pct()}
    if isinstance(device, GssCO2 | VaisalaGMP25x):
        return {"co2_pct": await device.read_co2_pct()}
    if isinstance(device, VaisalaHMP | Pt100Transmitter):
        return {"temp_c": await device.read_temp_c()}
    if isinstance(device, AlicatSerial | AlicatModbus):
        return {"flow_lpm": await device.read_flow_lpm()}
    if isinstance(device, ModbusRelayBoard):
        try:
            states = await device.read_states()
        except Exception as exc:  # reported as a bad reading, like any other fault
            return {"coils": Reading.bad("", repr(exc), clock.monotonic(), clock.utc())}
        return {
            f"coil{i}": Reading(float(on), "", Quality.GOOD, clock.monotonic(), clock.utc())
            for i, on in enumerate(states)
        }
    if isinstance(device, ModbusRegisterDevice):
        return await device.read_all()
    return {}
