"""Serve a whole site's instruments from the plant model (``hypoxia simulate-devices``).

Every device of the site file gets its wire-level simulator (simulators/devices), listening where
the site file says: Modbus TCP on ``host:port``; Modbus RTU over ``socket://host:port``; ASCII
lines on ``socket://host:port``; and for a device path (``/tmp/hypoxia-sim/o2``) a pty whose other
end is linked at that path. Each reactor has its own :class:`PlantLinkModel`.

The plant advances **lazily**: whenever an instrument is read or a set point arrives, it first
catches up to the injected clock in control-period steps. The same code therefore runs in real
time (scaled by ``--speed``) and in lockstep with a test's stepped clock.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controller.site import ReactorConfig, SiteConfig
from drivers.catalog import (
    AlicatModbusConfig,
    AlicatSerialConfig,
    DeviceConfig,
    Gmp25xConfig,
    GssConfig,
    HmpConfig,
    LuminOxConfig,
    Pt100Config,
    RelayBoardConfig,
)
from drivers.clock import Clock
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim
from simulators.devices.ascii_port import AsciiInstrumentSim, AsciiPortSim
from simulators.devices.gss import GssSim
from simulators.devices.luminox import LuminOxSim
from simulators.devices.modbus_bus import ModbusBusSim, ModbusDeviceSim
from simulators.devices.null_modem import PtyNullModem
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.register_map import RegisterMapSim
from simulators.devices.relay_board import RelayBoardSim
from simulators.devices.vaisala import GmpSim, HmpSim
from simulators.plant import Plant
from simulators.sensors import SensorModel
from simulators.vessel import Vessel

GAS_OF_ROLE = {"n2_mixer": "N2", "air_mixer": "Air", "o2_mixer": "O2", "co2_mixer": "CO2"}
ALICAT_GAS_NUMBER = {"Air": 0, "CO2": 4, "N2": 8, "O2": 11}
_PLANT_KEY = {"N2": "n2", "Air": "air", "O2": "o2", "CO2": "co2"}


class PlantLinkModel:
    """A :class:`~simulators.devices.link.PlantLink` backed by the plant and sensor models.

    Args:
        vessel: Physics of the reactor's vessel.
        clock: Time the plant follows (scaled wall clock or a test's stepped clock).
        seed: Sensor-noise seed.
        relay_roles: Relay index -> role (``heater``, ``harvest_pump``) as wired on the site.
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
        self._o2 = SensorModel(vessel.o2_sensor, self.dt_s, delay, rng, 100 * s.o2_frac)
        self._co2 = SensorModel(vessel.co2_sensor, self.dt_s, delay, rng, 100 * s.co2_frac)
        self._temp = SensorModel(vessel.temp_sensor, self.dt_s, 0.0, rng, s.temp_c)
        self._readings = (100 * s.o2_frac, 100 * s.co2_frac, s.temp_c)
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
            s = self.plant.state
            self._readings = (
                self._o2.sample(100 * s.o2_frac),
                self._co2.sample(100 * s.co2_frac),
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


def _device_sim(
    cfg: DeviceConfig, link: PlantLinkModel, clock: Clock
) -> ModbusDeviceSim | AsciiInstrumentSim:
    if isinstance(cfg, LuminOxConfig):
        return LuminOxSim(link, clock=clock)
    if isinstance(cfg, GssConfig):
        return GssSim(link, clock=clock, multiplier=cfg.expected_multiplier or 10)
    if isinstance(cfg, AlicatSerialConfig | AlicatModbusConfig):
        gas = GAS_OF_ROLE[cfg.role]
        if isinstance(cfg, AlicatSerialConfig):
            return AlicatAsciiSim(
                link,
                gas,
                unit_id=cfg.unit_id,
                full_scale=cfg.full_scale_lpm,
                gas=ALICAT_GAS_NUMBER[gas],
                clock=clock,
            )
        return AlicatModbusSim(
            link,
            gas,
            unit=cfg.unit,
            full_scale=cfg.full_scale_lpm,
            gas=ALICAT_GAS_NUMBER[gas],
            clock=clock,
        )
    if isinstance(cfg, Gmp25xConfig):
        return GmpSim(link, unit=cfg.unit, clock=clock)
    if isinstance(cfg, HmpConfig):
        return HmpSim(link, unit=cfg.unit, clock=clock)
    if isinstance(cfg, Pt100Config):
        return Pt100Sim(
            link,
            unit=cfg.unit,
            channels=max(4, cfg.channel + 1),
            sources={cfg.channel: link.temp_c},
            clock=clock,
        )
    if isinstance(cfg, RelayBoardConfig):
        return RelayBoardSim(link, unit=cfg.unit, channels=cfg.channels, clock=clock)
    getters = {
        "o2": link.o2_pct,
        "o2_secondary": link.o2_pct,
        "co2": link.co2_pct,
        "co2_secondary": link.co2_pct,
        "temperature": link.temp_c,
        "temperature_secondary": link.temp_c,
    }
    sources = {point: getters[role] for role, point in cfg.roles.items() if role in getters}
    reg = RegisterMapSim(cfg.map, sources, unit=cfg.unit, clock=clock)
    heater_point = cfg.roles.get("heater")
    if heater_point is not None:
        link.heater_source = lambda: reg.written.get(heater_point, 0.0)
    return reg


async def serve_site(site: SiteConfig, vessel: Vessel, clock: Clock, seed: int = 0) -> SiteSim:
    """Start a simulator for every device of ``site`` where the site file says it is."""
    sim = SiteSim()
    by_bus: dict[str, list[ModbusDeviceSim]] = {}
    by_line: dict[str, list[AsciiInstrumentSim]] = {}
    for reactor in site.reactors:
        link = PlantLinkModel(vessel, clock, seed, _relay_roles(reactor))
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


def _relay_roles(reactor: ReactorConfig) -> dict[int, str]:
    roles: dict[int, str] = {}
    for cfg in reactor.devices:
        if isinstance(cfg, RelayBoardConfig):
            roles.update({index: role for role, index in cfg.outputs.items()})
    return roles


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
