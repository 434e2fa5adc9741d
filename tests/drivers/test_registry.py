"""The device registry: a new instrument kind is a driver, a simulator and one registry call.

The example kind below is a Modbus O2 transmitter (O2 in 0.01 vol-% as int16 at holding register
0). It is registered for one test at a time, added to the example site file, served over Modbus
TCP by :func:`simulators.site_sim.serve_site`, opened by :func:`drivers.catalog.open_devices` and
read through :func:`drivers.catalog.read_device` -- the same path ``hypoxia devices read`` takes.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Self

import pytest
from pymodbus.simulator import DataType, SimData

from common.clock import Clock, ManualClock
from common.config_errors import ConfigError
from controller.service.site import load_site
from drivers.catalog import (
    DeviceKind,
    OnBus,
    RoleSet,
    Transports,
    device_roles,
    kinds,
    open_devices,
    read_device,
    register,
    registered,
)
from drivers.codec import RegisterType, decode, encode
from drivers.errors import DriverError
from drivers.quality import Stamper, ValidRange
from drivers.reading import Quality, Reading
from drivers.transport.modbus import ModbusHub
from drivers.units import PCT
from simulators.devices.link import PlantLink, SiteLink
from simulators.devices.modbus_bus import ModbusDeviceSim, put
from simulators.site_sim import serve_site, simulator_factory
from simulators.vessel import load_vessel
from tests.service_kit import ROOT, site_file

# ---- the example kind: driver class + config model (would be drivers/example_o2.py) ---------


class ExampleO2:
    """Modbus O2 transmitter: holding register 0 is O2 in 0.01 vol-% (int16)."""

    def __init__(self, hub: ModbusHub, unit: int, *, name: str, clock: Clock) -> None:
        self.hub = hub
        self.unit = unit
        self.name = name
        self._stamper = Stamper(clock)

    async def start(self) -> None:
        """Nothing to prepare."""

    async def read_o2_pct(self) -> Reading:
        try:
            regs = await self.hub.read_holding_registers(self.unit, 0, 1)
        except DriverError as exc:
            return self._stamper.failed(PCT, exc)
        o2_pct = int(decode(regs, RegisterType.INT16)) * 0.01
        return self._stamper.value(o2_pct, PCT, ValidRange(0.0, 100.0))

    async def read_all(self) -> dict[str, Reading]:
        return {"o2_pct": await self.read_o2_pct()}


class ExampleO2Config(OnBus):
    """Example Modbus O2 transmitter."""

    driver: Literal["example_o2"]
    role: Literal["o2", "o2_secondary"] = "o2"

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> ExampleO2:
        sensor = ExampleO2(self.hub(transports), self.unit, name=self.name, clock=clock)
        roles.readers[self.role] = sensor.read_o2_pct
        return sensor


# ---- its simulator (would be simulators/devices/example_o2.py) -----------------------------


class ExampleO2Sim(ModbusDeviceSim):
    """Serves the plant's O2 in register 0."""

    def __init__(self, link: PlantLink, *, unit: int, clock: Clock) -> None:
        super().__init__(unit, clock=clock)
        self.link = link

    @classmethod
    def for_config(cls, cfg: ExampleO2Config, link: SiteLink, clock: Clock) -> Self:
        return cls(link, unit=cfg.unit, clock=clock)

    def build(self) -> list[SimData]:
        return [SimData(0, values=[0], datatype=DataType.REGISTERS)]

    def on_read(self, fc: int, start: int, address: int, count: int, regs: list[int]) -> None:
        put(regs, start, 0, encode(self.link.o2_pct() / 0.01, RegisterType.INT16))


# ---- ... and its registry line (would be one line in drivers/catalog.py) -------------------

SIMULATOR = "tests.drivers.test_registry:ExampleO2Sim.for_config"


@pytest.fixture
def example_kind() -> Iterator[DeviceKind]:
    with registered(ExampleO2Config, simulator=SIMULATOR) as kind:
        yield kind


EXAMPLE_DEVICE = """
[[reactors.devices]]
name = "o2-example"
driver = "example_o2"
bus = "plant-tcp"
unit = 9
role = "o2_secondary"
"""


def _site_with_example(tmp_path: Path) -> Path:
    path = site_file(tmp_path)
    path.write_text(path.read_text().replace("# ---- users", EXAMPLE_DEVICE + "\n# ---- users"))
    return path


async def test_a_registered_kind_works_end_to_end(
    example_kind: DeviceKind, tmp_path: Path, clock: ManualClock
) -> None:
    site = load_site(_site_with_example(tmp_path))
    (reactor,) = site.reactors
    config = next(d for d in reactor.devices if d.name == "o2-example")
    assert isinstance(config, ExampleO2Config)
    assert device_roles(config) == ["o2_secondary"]

    sim = await serve_site(site, load_vessel("workstation-100l"), clock)
    transports = Transports.create(site.buses, site.lines, clock)
    try:
        assert isinstance(sim.sim("o2-example"), ExampleO2Sim)
        assert await transports.open(wait_s=5.0) == []
        roles = open_devices(reactor.devices, transports, clock)
        device = roles.devices["o2-example"]
        await device.start()
        readings = await read_device(device)
        expected_pct = sim.links["ws1"].o2_pct()
        by_role = await roles.readers["o2_secondary"]()
    finally:
        await transports.close()
        await sim.close()

    assert isinstance(device, ExampleO2)
    assert list(readings) == ["o2_pct"]
    o2 = readings["o2_pct"]
    assert o2.quality is Quality.GOOD, o2.reason
    assert o2.unit == PCT
    assert o2.value == pytest.approx(expected_pct, abs=0.01)
    assert o2.value == pytest.approx(20.9, abs=0.2)
    assert by_role.value == o2.value


def test_registration_does_not_leak(tmp_path: Path) -> None:
    with registered(ExampleO2Config, simulator=SIMULATOR):
        assert "example_o2" in kinds()
    assert "example_o2" not in kinds()
    with pytest.raises(ConfigError, match="does not match any of the expected tags"):
        load_site(_site_with_example(tmp_path))


def test_a_driver_name_is_registered_once(example_kind: DeviceKind) -> None:
    assert example_kind.driver == "example_o2"
    assert register(ExampleO2Config, simulator=SIMULATOR) is example_kind  # same kind again
    with pytest.raises(ValueError, match="already registered"):
        register(ExampleO2Config, simulator="elsewhere:Sim")
    with pytest.raises(ValueError, match="already registered"), registered(ExampleO2Config):
        pass
    assert "example_o2" in kinds()


def test_a_config_without_a_single_driver_name_is_refused() -> None:
    class Vague(OnBus):
        role: Literal["o2"] = "o2"

    with pytest.raises(TypeError, match=r"driver must be Literal\['one_name'\]"):
        register(Vague)


def _isinstance_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("isinstance", "issubclass")
    ]


def test_catalog_dispatches_on_no_device_class() -> None:
    assert _isinstance_calls(ROOT / "drivers/catalog.py") == []


def test_site_simulator_dispatches_on_no_config_class() -> None:
    config_names = {kind.config.__name__ for kind in kinds().values()}
    calls = _isinstance_calls(ROOT / "simulators/site_sim.py")
    assert [c for c in calls if any(name in c for name in config_names)] == []


def test_registry_covers_the_example_site() -> None:
    site = tomllib.loads((ROOT / "examples/sites/sim.toml").read_text())
    named = {d["driver"] for reactor in site["reactors"] for d in reactor["devices"]}
    registry = kinds()
    assert named <= set(registry), named - set(registry)
    for driver in named:
        factory = simulator_factory(registry[driver].simulator)
        assert callable(factory), driver
