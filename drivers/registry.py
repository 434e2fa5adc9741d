"""Device registry: every instrument kind a site file may name, in one table.

A *kind* is one ``driver = "..."`` value of the site file. Its pydantic config model (a
:class:`DeviceModel` subclass living next to its driver class) carries everything the site needs:

* the ``driver`` ``Literal`` and the options, validated before any hardware moves;
* :meth:`DeviceModel.open`: build the driver on its transport from :class:`Transports` and bind
  it to its role(s) in a :class:`RoleSet`;
* :meth:`DeviceModel.served_roles`: the roles the entry fills (its ``role`` field by default).

What a device reads for ``hypoxia devices read`` is its driver's ``read_all`` (part of
:class:`drivers.base.Device`). :func:`register` adds the kind with its **simulator counterpart**,
named by a dotted path (``"simulators.devices.luminox:LuminOxSim.for_config"``) that only
:mod:`simulators.site_sim` resolves -- drivers never import simulators.

:data:`DeviceConfig` validates a device entry against the kinds registered *at validation time*
(a discriminated union on ``driver``, rebuilt when the registry changes), so a kind registered
after the site models were defined is still accepted, and errors read exactly as pydantic's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, TypeAdapter
from pydantic_core import core_schema

from common.clock import DEFAULT_CLOCK, Clock
from drivers.base import Device, FlowController, GasCheck, O2Compensated, SwitchedOutput
from drivers.errors import BusDisconnectedError
from drivers.reading import Reading
from drivers.transport.modbus import ModbusHub
from drivers.transport.serial_line import SerialLine
from drivers.transport.settings import ModbusBusSettings, SerialLineSettings
from drivers.transport.startup import TransportState

_LOG = logging.getLogger(__name__)

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

ReadFn = Callable[[], Awaitable[Reading]]
SetFn = Callable[[float], Awaitable[None]]
GasCheckFn = Callable[[], Awaitable[GasCheck]]


@dataclass(slots=True)
class RoleSet:
    """One reactor's instruments by role.

    Attributes:
        readers: Sensor role -> coroutine returning a :class:`Reading`.
        mixers: Mixer role -> flow controller.
        heater: Sets heater power (W) or ``None``.
        pump: The harvest pump output, or ``None``.
        o2_compensation: CO2 probes that want the measured O2 written to them.
        devices: Device name -> driver (started by the service, read by ``hypoxia devices read``).
        gas_checks: Mixer role -> "select and verify the site file's gas" for flow controllers
            that can (:meth:`drivers.alicat.AlicatSerial.ensure_gas` bound to its gas); run them
            at start with :func:`drivers.catalog.ensure_gases`.
    """

    readers: dict[str, ReadFn] = field(default_factory=dict)
    mixers: dict[str, FlowController] = field(default_factory=dict)
    heater: SetFn | None = None
    pump: SwitchedOutput | None = None
    o2_compensation: list[O2Compensated] = field(default_factory=list)
    devices: dict[str, Device] = field(default_factory=dict)
    gas_checks: dict[str, GasCheckFn] = field(default_factory=dict)


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
        """Open every bus and line **concurrently**, each trying for up to ``wait_s`` seconds.

        Six dead transports take about as long as one. A transport that stays closed degrades
        its own devices only; it is retried at run time from its initial reconnect delay, and
        :meth:`states` tells why it is not open. Each one logs one warning naming itself and the
        cause (:mod:`drivers.transport.startup`).

        Returns:
            The names (as in the site file) of the buses and lines not open.
        """
        openers: list[tuple[str, str, Awaitable[None]]] = [
            *((name, hub.label, hub.connect(wait_s=wait_s)) for name, hub in self.buses.items()),
            *((name, line.label, line.open(wait_s=wait_s)) for name, line in self.lines.items()),
        ]
        results = await asyncio.gather(*(o for _, _, o in openers), return_exceptions=True)
        failed: list[str] = []
        for (name, label, _), result in zip(openers, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                if not isinstance(result, BusDisconnectedError):  # a bug, not a dead port
                    _LOG.error("%s: opening failed unexpectedly", label, exc_info=result)
                failed.append(name)
        return failed

    def states(self) -> dict[str, TransportState]:
        """Every bus and line by label (``"bus rs485-gw"``, ``"line o2-uart"``): open or why not."""
        hubs = {hub.label: hub.state() for hub in self.buses.values()}
        return hubs | {line.label: line.state() for line in self.lines.values()}

    def not_open(self) -> list[TransportState]:
        """The buses and lines that are not open now, with their first and latest failure."""
        return [state for state in self.states().values() if not state.connected]

    def state_of(self, config: DeviceModel) -> TransportState | None:
        """The state of the bus or line a device entry hangs on (``None`` if it names none)."""
        label = config.transport_label()
        return self.states().get(label) if label else None

    async def close(self) -> None:
        """Close every bus and line."""
        await asyncio.gather(
            *(hub.close() for hub in self.buses.values()),
            *(line.close() for line in self.lines.values()),
        )


class DeviceModel(BaseModel):
    """Base of every device entry's config model (one subclass per kind).

    A subclass declares ``driver: Literal["its_name"]``, its options and, unless it has a single
    ``role`` field, :meth:`served_roles`; it implements :meth:`open`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="unique within the site")
    driver: str

    def served_roles(self) -> list[str]:
        """The roles this entry serves: its ``role`` field (kinds with several override this)."""
        role = getattr(self, "role", None)
        if role is None:
            raise NotImplementedError(f"{type(self).__name__} must define served_roles()")
        return [str(role)]

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> Device:
        """Build the driver on its transport and bind it to its role(s) in ``roles``."""
        raise NotImplementedError(f"{type(self).__name__} must define open()")

    def transport_label(self) -> str:
        """``"bus NAME"`` / ``"line NAME"`` of the transport it hangs on; ``""`` if none."""
        return ""


class OnLine(DeviceModel):
    """A device on an ASCII serial line."""

    line: str = Field(min_length=1, description="name of a [lines.NAME] entry")

    def serial_line(self, transports: Transports) -> SerialLine:
        """The shared line this device hangs on."""
        return transports.lines[self.line]

    def transport_label(self) -> str:
        """``"line NAME"``."""
        return f"line {self.line}"


class OnBus(DeviceModel):
    """A device on a Modbus bus."""

    bus: str = Field(min_length=1, description="name of a [buses.NAME] entry")
    unit: int = Field(ge=1, le=247, description="Modbus unit id")

    def hub(self, transports: Transports) -> ModbusHub:
        """The shared bus this device hangs on."""
        return transports.buses[self.bus]

    def transport_label(self) -> str:
        """``"bus NAME"``."""
        return f"bus {self.bus}"


@dataclass(frozen=True, slots=True)
class DeviceKind:
    """One registered instrument kind.

    Attributes:
        driver: The site file's ``driver`` value (from the config's ``Literal``).
        config: The config model.
        simulator: ``"module:attribute.path"`` of a factory ``(config, link, clock) -> sim``,
            resolved by :mod:`simulators.site_sim` only; ``""`` when there is none.
    """

    driver: str
    config: type[DeviceModel]
    simulator: str = ""


_KINDS: dict[str, DeviceKind] = {}


def _driver_name(config: type[DeviceModel]) -> str:
    annotation = config.model_fields["driver"].annotation
    values = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(values) != 1 or not isinstance(values[0], str):
        raise TypeError(f"{config.__name__}.driver must be Literal['one_name'], not {annotation}")
    return values[0]


def register(config: type[DeviceModel], *, simulator: str = "") -> DeviceKind:
    """Add a device kind; its ``driver`` name comes from the config's ``Literal``.

    Args:
        config: The kind's config model.
        simulator: Dotted path ``"package.module:Class.factory"`` of its simulator factory.

    Returns:
        The registered kind.

    Raises:
        TypeError: ``config`` is not a :class:`DeviceModel` with a one-value ``driver`` Literal.
        ValueError: The driver name is taken, or ``simulator`` is not ``module:attribute``.
    """
    if not issubclass(config, DeviceModel):
        raise TypeError(f"{config!r} is not a DeviceModel")
    driver = _driver_name(config)
    existing = _KINDS.get(driver)
    if existing is not None:
        if existing.config is config and existing.simulator == simulator:
            return existing  # the same kind again (a re-imported module)
        raise ValueError(f"driver {driver!r} is already registered ({existing.config})")
    if simulator and not all(simulator.partition(":")[::2]):
        raise ValueError(f"simulator {simulator!r} is not 'package.module:attribute'")
    kind = DeviceKind(driver, config, simulator)
    _KINDS[driver] = kind
    return kind


def unregister(driver: str) -> None:
    """Remove a kind (tests); unknown names raise ``KeyError``."""
    del _KINDS[driver]


@contextmanager
def registered(config: type[DeviceModel], *, simulator: str = "") -> Iterator[DeviceKind]:
    """Register a kind for the duration of a ``with`` block (tests, plug-in experiments).

    Raises:
        ValueError: Its driver name is already registered (it would be removed on exit).
    """
    driver = _driver_name(config)
    if driver in _KINDS:
        raise ValueError(f"driver {driver!r} is already registered ({_KINDS[driver].config})")
    kind = register(config, simulator=simulator)
    try:
        yield kind
    finally:
        unregister(kind.driver)


def kinds() -> dict[str, DeviceKind]:
    """Every registered kind by driver name (a copy)."""
    return dict(_KINDS)


def kind_of(config: DeviceModel) -> DeviceKind:
    """The registered kind of a validated device entry."""
    return _KINDS[config.driver]


def _union_type(configs: tuple[type[DeviceModel], ...]) -> Any:
    union = functools.reduce(operator.or_, configs)
    return Annotated[union, Field(discriminator="driver")]


@functools.lru_cache(maxsize=8)
def _union_adapter(configs: tuple[type[DeviceModel], ...]) -> TypeAdapter[DeviceModel]:
    return TypeAdapter(_union_type(configs))


def _validate_device(value: Any, info: core_schema.ValidationInfo) -> DeviceModel:
    if not _KINDS:
        raise ValueError("no device kinds are registered (import drivers.catalog)")
    adapter = _union_adapter(tuple(kind.config for kind in _KINDS.values()))
    return adapter.validate_python(value, context=info.context)


def _dump_device(model: DeviceModel, info: core_schema.SerializationInfo) -> Any:
    return model.model_dump(mode=info.mode, by_alias=bool(info.by_alias))


class _RegisteredKinds:
    """Pydantic marker: validate with the discriminated union of the kinds registered now."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        documented = _union_type(tuple(kind.config for kind in _KINDS.values()))
        return core_schema.with_info_plain_validator_function(
            _validate_device,
            # JSON schema only: the kinds registered when the enclosing model was built
            json_schema_input_schema=handler.generate_schema(documented) if _KINDS else None,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _dump_device, info_arg=True
            ),
        )


DeviceConfig = Annotated[DeviceModel, _RegisteredKinds()]
"""Any device entry; pydantic picks the registered model from ``driver``."""
