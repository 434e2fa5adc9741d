"""Serve a whole site's instruments from the plant model (``hypoxia simulate-devices``).

Every device of the site file gets its wire-level simulator (simulators/devices), listening where
the site file says: Modbus TCP on ``host:port``; Modbus RTU over ``socket://host:port``; ASCII
lines on ``socket://host:port``; and for a device path (``/tmp/hypoxia-sim/o2``) a pty whose other
end is linked at that path. Each reactor has its own :class:`PlantLinkModel`.

Which simulator serves a device comes from the device registry (:mod:`drivers.registry`): each
kind names its simulator factory by a dotted path, resolved here with :mod:`importlib` (drivers
never import simulators). A factory builds the simulator from the device's config and wires its
actuators (relays, heater) into the :class:`~simulators.devices.link.SiteLink`.

The plant advances **lazily**: whenever an instrument is read or a set point arrives, it first
catches up to the injected clock in control-period steps. The same code therefore runs in real
time (scaled by ``--speed``) and in lockstep with a test's stepped clock.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from common.clock import Clock
from controller.service.site import SiteConfig
from drivers.registry import DeviceModel, kind_of
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from simulators.devices.ascii_port import AsciiInstrumentSim, AsciiPortSim
from simulators.devices.link import SiteLink
from simulators.devices.modbus_bus import ModbusBusSim, ModbusDeviceSim
from simulators.devices.null_modem import PtyNullModem
from simulators.plant import Plant
from simulators.sensors import SensorModel
from simulators.vessel import Vessel

_PLANT_KEY = {"N2": "n2", "Air": "air", "O2": "o2", "CO2": "co2"}


class PlantLinkModel:
    """A :class:`~simulators.devices.link.SiteLink` backed by the plant and sensor models.

    Args:
        vessel: Physics of the reactor's vessel.
        clock: Time the plant follows (scaled wall clock or a test's stepped clock).
        seed: Sensor-noise seed.
        relay_roles: Relay index -> role (``heater``, ``harvest_pump``) as wired on the site;
            simulator factories add to it through :meth:`wire_relay`.
    """

    def __init__(
        self, vessel: Vessel, clock: Clock, seed: int = 0, relay_roles: dict[int, str] | None = None
    ) -> None:
        self.vessel = vessel
        self.plant = Plant(vessel)
        self.clock = clock
        self.dt_s = vessel.control_period_s
        self._t = clock.monotonic()
        rng = random.Random(seed)
        s, delay = self.plant.state, vessel.gas.transport_delay_s
        # each gas sensor's basis (dry / wet %, partial pressure) converted once (physics.md §B6)
        o2_0 = self.plant.gas_reading(s.o2_frac, vessel.o2_sensor.basis)
        co2_0 = self.plant.gas_reading(s.co2_frac, vessel.co2_sensor.basis)
        self._o2 = SensorModel(vessel.o2_sensor, self.dt_s, delay, rng, o2_0)
        self._co2 = SensorModel(vessel.co2_sensor, self.dt_s, delay, rng, co2_0)
        self._temp = SensorModel(vessel.temp_sensor, self.dt_s, 0.0, rng, s.temp_c)
        self._readings = (o2_0, co2_0, s.temp_c)
        self.setpoints_lpm: dict[str, float] = {}
        self.heater_source: Callable[[], float] | None = None
        self.relay_roles = relay_roles or {}
        self.relays: dict[int, bool] = {}
        self.door_open = False

    def catch_up(self) -> None:
        """Advance the plant to the clock's present, one control period at a time."""
        now = self.clock.monotonic()
        while self._t + self.dt_s <= now + 1e-9:
            q = self.setpoints_lpm
            self.plant.door_open = self.door_open
            self.plant.advance(
                self.dt_s,
                q.get("N2", 0.0),
                q.get("Air", 0.0),
                q.get("O2", 0.0),
                q.get("CO2", 0.0),
                self._heater_now(),
            )
            s, plant, v = self.plant.state, self.plant, self.vessel
            self._readings = (
                self._o2.sample(plant.gas_reading(s.o2_frac, v.o2_sensor.basis)),
                self._co2.sample(plant.gas_reading(s.co2_frac, v.co2_sensor.basis)),
                self._temp.sample(s.temp_c),
            )
            self._t += self.dt_s

    def _heater_now(self) -> float:
        on = any(self.relays.get(i) for i, role in self.relay_roles.items() if role == "heater")
        if on:
            return self.vessel.thermal.heater_max_w
        return self.heater_source() if self.heater_source is not None else 0.0

    # PlantLink ---------------------------------------------------------------------------
    def o2_pct(self) -> float:
        """O2 at the sensor, vol-%."""
        self.catch_up()
        return self._readings[0]

    def co2_pct(self) -> float:
        """CO2 at the sensor, vol-%."""
        self.catch_up()
        return self._readings[1]

    def temp_c(self) -> float:
        """Temperature at the probe, degC."""
        self.catch_up()
        return self._readings[2]

    def flow_lpm(self, gas: str) -> float:
        """Actual flow of a gas line, L/min."""
        self.catch_up()
        return float(getattr(self.plant.state.flows, f"{_PLANT_KEY[gas]}_lpm"))

    def set_flow_setpoint_lpm(self, gas: str, lpm: float) -> None:
        """An MFC now controls line ``gas`` to ``lpm``."""
        self.catch_up()
        self.setpoints_lpm[gas] = max(0.0, lpm)

    def set_relay(self, index: int, on: bool) -> None:
        """A relay output changed."""
        self.catch_up()
        self.relays[index] = on

    # SiteLink ----------------------------------------------------------------------------
    def wire_relay(self, index: int, role: str) -> None:
        """Relay ``index`` drives ``role`` (a ``heater`` relay heats at full power when on)."""
        self.relay_roles[index] = role

    def wire_heater(self, power_w: Callable[[], float]) -> None:
        """A heater power stage: the plant heats with ``power_w()`` W."""
        self.heater_source = power_w


class SimFactory(Protocol):
    """What a device kind's ``simulator`` path names: config -> wire-level simulator."""

    def __call__(
        self, cfg: Any, link: SiteLink, clock: Clock
    ) -> ModbusDeviceSim | AsciiInstrumentSim:
        """The simulator of device entry ``cfg``, fed by (and wired into) ``link``."""
        ...


@dataclass(slots=True)
class Served:
    """One simulated device and where it listens."""

    reactor: str
    device: str
    driver: str
    where: str
    sim: ModbusDeviceSim | AsciiInstrumentSim


@dataclass(slots=True)
class SiteSim:
    """All simulators of a site; :meth:`close` stops them."""

    links: dict[str, PlantLinkModel] = field(default_factory=dict)
    served: list[Served] = field(default_factory=list)
    buses: list[ModbusBusSim] = field(default_factory=list)
    ports: list[AsciiPortSim] = field(default_factory=list)
    modems: list[PtyNullModem] = field(default_factory=list)
    links_made: list[Path] = field(default_factory=list)

    def sim(self, device: str) -> ModbusDeviceSim | AsciiInstrumentSim:
        """The simulator of a device by name (for fault injection)."""
        return next(s.sim for s in self.served if s.device == device)

    async def close(self) -> None:
        """Stop every server and remove the pty links."""
        for bus in self.buses:
            await bus.stop()
        for port in self.ports:
            await port.close()
        for modem in self.modems:
            await modem.close()
        for link in self.links_made:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()


def _host_port(url: str) -> tuple[str, int] | None:
    if not url.startswith("socket://"):
        return None
    host, _, port = url.removeprefix("socket://").rpartition(":")
    return host, int(port)


def _link_path(target: str, path: str, sim: SiteSim) -> None:
    where = Path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        where.unlink()
    os.symlink(target, where)
    sim.links_made.append(where)


@functools.cache
def simulator_factory(path: str) -> SimFactory:
    """Resolve a registry entry's ``"package.module:Class.factory"`` path.

    Raises:
        ValueError: The path is empty or does not name a callable.
    """
    module_name, _, attribute = path.partition(":")
    if not (module_name and attribute):
        raise ValueError(f"simulator path {path!r} is not 'package.module:attribute'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"simulator path {path!r} names {target!r}, which is not callable")
    return cast("SimFactory", target)


def _device_sim(
    cfg: DeviceModel, link: SiteLink, clock: Clock
) -> ModbusDeviceSim | AsciiInstrumentSim:
    kind = kind_of(cfg)
    if not kind.simulator:
        raise ValueError(f"device '{cfg.name}': driver '{cfg.driver}' has no simulator")
    return simulator_factory(kind.simulator)(cfg, link, clock)


async def serve_site(site: SiteConfig, vessel: Vessel, clock: Clock, seed: int = 0) -> SiteSim:
    """Start a simulator for every device of ``site`` where the site file says it is."""
    sim = SiteSim()
    by_bus: dict[str, list[ModbusDeviceSim]] = {}
    by_line: dict[str, list[AsciiInstrumentSim]] = {}
    for reactor in site.reactors:
        link = PlantLinkModel(vessel, clock, seed)
        sim.links[reactor.id] = link
        for cfg in reactor.devices:
            dev = _device_sim(cfg, link, clock)
            bus: str | None = getattr(cfg, "bus", None)
            where: str = bus or str(getattr(cfg, "line", ""))
            sim.served.append(Served(reactor.id, cfg.name, cfg.driver, where, dev))
            if isinstance(dev, ModbusDeviceSim):
                by_bus.setdefault(where, []).append(dev)
            else:
                by_line.setdefault(where, []).append(dev)
    places: dict[str, str] = {}
    for name, devices in by_bus.items():
        places[name] = await _serve_bus(sim, site.buses[name], devices)
    for name, instruments in by_line.items():
        places[name] = await _serve_line(sim, site.lines[name].port, instruments)
    for served in sim.served:
        served.where = f"{served.where} -> {places[served.where]}"
    return sim


async def _serve_bus(
    sim: SiteSim, settings: ModbusTcpSettings | ModbusRtuSettings, devices: list[ModbusDeviceSim]
) -> str:
    if isinstance(settings, ModbusTcpSettings):
        bus = ModbusBusSim(
            devices, framing=settings.framing, host=settings.host, port=settings.port
        )
        await bus.start()
        sim.buses.append(bus)
        return f"modbus {settings.framing} on {settings.host}:{bus.port}"
    hp = _host_port(settings.port)
    if hp is not None:
        bus = ModbusBusSim(devices, framing="rtu", host=hp[0], port=hp[1])
        await bus.start()
        sim.buses.append(bus)
        return f"modbus rtu over tcp on {hp[0]}:{bus.port}"
    modem = PtyNullModem()
    ours, theirs = await modem.open()
    sim.modems.append(modem)
    bus = ModbusBusSim(devices, serial_port=ours)
    await bus.start()
    sim.buses.append(bus)
    _link_path(theirs, settings.port, sim)
    return f"modbus rtu on pty {settings.port} ({theirs})"


async def _serve_line(sim: SiteSim, port: str, instruments: list[AsciiInstrumentSim]) -> str:
    ascii_port = AsciiPortSim(instruments, stream_interval_s=1.0)
    sim.ports.append(ascii_port)
    hp = _host_port(port)
    if hp is not None:
        url = await ascii_port.serve_tcp(hp[0], hp[1])
        return f"ascii on {url.removeprefix('socket://')}"
    tty_path = await ascii_port.serve_pty()
    _link_path(tty_path, port, sim)
    return f"ascii on pty {port} ({tty_path})"
