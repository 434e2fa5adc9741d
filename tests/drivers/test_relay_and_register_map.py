"""Relay board and the generic register-map driver against their simulators."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from common.clock import ManualClock
from drivers.base import SwitchedOutput
from drivers.errors import WriteVerifyError
from drivers.reading import Quality
from drivers.register_map import ModbusRegisterDevice, RegisterMap, RegisterPoint, plan_reads
from drivers.relay_board import ModbusRelayBoard
from simulators.devices.harness import Framing, ModbusFactory
from simulators.devices.link import StaticPlantLink
from simulators.devices.register_map import RegisterMapSim
from simulators.devices.relay_board import RelayBoardSim


@pytest.mark.parametrize("framing", ["socket", "rtu"])
async def test_relays_switch_verify_and_reach_the_plant(
    modbus: ModbusFactory, link: StaticPlantLink, framing: Framing
) -> None:
    sim = RelayBoardSim(link, channels=4)
    _, hub = await modbus([sim], framing=framing)
    board = ModbusRelayBoard(hub, channels=4)
    pump = board.output(3, "harvest-pump")
    assert isinstance(pump, SwitchedOutput)
    await board.set(0, True)
    await pump.set(True)
    assert link.relays == {0: True, 3: True}
    assert await board.read_states() == [True, False, False, True]
    assert await pump.read()
    await pump.set(False)
    assert not await board.get(3)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        await board.set(4, True)


async def test_stuck_relay_raises(modbus: ModbusFactory, link: StaticPlantLink) -> None:
    sim = RelayBoardSim(link)
    _, hub = await modbus([sim])
    board = ModbusRelayBoard(hub)
    sim.faults.stuck = True
    with pytest.raises(WriteVerifyError) as err:
        await board.set(2, True)
    assert err.value.reason == (
        "write_verify_failed: relays: relay 2 requested True, read back False"
    )
    assert link.relays == {}


MAP = RegisterMap(
    points=(
        RegisterPoint(
            name="o2_pct",
            address=0,
            scale=0.1,
            unit="%",
            valid_min=0,
            valid_max=25,
            sentinels=(32767, -32768),
        ),
        RegisterPoint(name="temp_c", address=1, dtype="int16", scale=0.01, unit="degC"),
        RegisterPoint(name="co2_pct", address=4, dtype="float32", word_order="little", unit="%"),
        RegisterPoint(name="hours_h", kind="input", address=10, dtype="uint32", unit="h"),
        RegisterPoint(
            name="setpoint_pct", address=20, scale=0.1, unit="%", writable=True, write_function=6
        ),
        RegisterPoint(name="valve", kind="coil", address=0, unit="", writable=True),
    ),
    max_gap=2,
)


def test_plan_merges_adjacent_points() -> None:
    blocks = plan_reads(MAP)
    spans = [(b.kind.value, b.address, b.count, [p.name for p in b.points]) for b in blocks]
    assert spans == [
        ("holding", 0, 6, ["o2_pct", "temp_c", "co2_pct"]),
        ("holding", 20, 1, ["setpoint_pct"]),
        ("input", 10, 2, ["hours_h"]),
        ("coil", 0, 1, ["valve"]),
    ]


@pytest.mark.parametrize("framing", ["socket", "rtu"])
async def test_register_map_read_write(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock, framing: Framing
) -> None:
    sim = RegisterMapSim(
        MAP,
        {
            "o2_pct": link.o2_pct,
            "temp_c": link.temp_c,
            "co2_pct": link.co2_pct,
            "hours_h": lambda: 70000.0,
        },
        unit=5,
    )
    _, hub = await modbus([sim], framing=framing)
    device = ModbusRegisterDevice(hub, 5, MAP, name="o2-transmitter", clock=clock)
    assert device.transactions_per_read == 4
    link.o2_now_pct, link.temp_now_c, link.co2_now_pct = 1.2, 36.95, 5.0
    readings = await device.read_all()
    assert list(readings) == ["o2_pct", "temp_c", "co2_pct", "hours_h", "setpoint_pct", "valve"]
    assert readings["o2_pct"].value == pytest.approx(1.2)
    assert readings["temp_c"].value == pytest.approx(36.95)
    assert readings["co2_pct"].value == pytest.approx(5.0)
    assert readings["hours_h"].value == 70000.0
    assert all(r.quality is Quality.GOOD for r in readings.values())

    await device.write("setpoint_pct", 2.5)
    assert sim.written["setpoint_pct"] == pytest.approx(2.5)
    assert (await device.read("setpoint_pct")).value == pytest.approx(2.5)
    await device.write("valve", 1)
    assert (await device.read("valve")).value == 1.0
    with pytest.raises(ValueError, match="not writable"):
        await device.write("o2_pct", 1.0)

    sim.raw_overrides["o2_pct"] = 0x8000
    assert (await device.read("o2_pct")).reason == "sentinel: 0x8000"
    sim.raw_overrides["o2_pct"] = 300  # 30.0 %
    assert (await device.read("o2_pct")).reason.startswith("out_of_range: 30 %")
    sim.raw_overrides.clear()

    sim.faults.stuck = True
    with pytest.raises(WriteVerifyError):
        await device.write("setpoint_pct", 3.0)
    sim.faults.clear()
    sim.faults.no_reply = True
    readings = await device.read_all()
    assert all(r.reason.startswith("timeout") for r in readings.values())
    assert all(math.isnan(r.value) for r in readings.values())


def test_register_map_validation_names_the_field() -> None:
    with pytest.raises(ValidationError, match="extra_forbidden"):
        RegisterPoint.model_validate({"name": "x_pct", "address": 0, "unit": "%", "bogus": 1})
    with pytest.raises(ValidationError, match="less than or equal to 65535"):
        RegisterPoint(name="x_pct", address=70000, unit="%")
    with pytest.raises(ValidationError, match="scale must be finite and non-zero"):
        RegisterPoint(name="x_pct", address=0, unit="%", scale=0)
    with pytest.raises(ValidationError, match="cannot be writable"):
        RegisterPoint(name="x_pct", kind="input", address=0, unit="%", writable=True)
    with pytest.raises(ValidationError, match="write_function 6 writes one register"):
        RegisterPoint(
            name="x_pct", address=0, unit="%", dtype="float32", writable=True, write_function=6
        )
    point = RegisterPoint(name="x_pct", address=0, unit="%")
    with pytest.raises(ValidationError, match="duplicate point names: x_pct"):
        RegisterMap(points=(point, point))
    parsed = RegisterMap.model_validate(
        {"points": [{"name": "co2_ppm", "kind": "input", "address": 3, "unit": "ppm"}]}
    )
    assert parsed.point("co2_ppm").count == 1
