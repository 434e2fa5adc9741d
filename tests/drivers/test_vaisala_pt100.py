"""Vaisala GMP25x/HMP and PT100 transmitter drivers against their Modbus simulators."""

from __future__ import annotations

import math

import pytest

from common.clock import ManualClock
from drivers.errors import ModbusDeviceError, WriteVerifyError
from drivers.pt100 import Pt100Transmitter
from drivers.reading import Quality
from drivers.vaisala import VaisalaGMP25x, VaisalaHMP
from simulators.devices.harness import Framing, ModbusFactory
from simulators.devices.link import StaticPlantLink
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.vaisala import GmpSim, HmpSim


@pytest.mark.parametrize("framing", ["socket", "rtu"])
async def test_gmp_reads_co2_and_temperature(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock, framing: Framing
) -> None:
    _, hub = await modbus([GmpSim(link)], framing=framing)
    gmp = VaisalaGMP25x(hub, clock=clock)
    link.co2_now_pct, link.temp_now_c = 5.0, 37.0
    sample = await gmp.read()
    assert sample.co2_pct.quality is Quality.GOOD
    assert sample.co2_pct.value == pytest.approx(5.0, rel=1e-6)
    assert sample.temp_c.value == pytest.approx(37.0)
    assert (sample.device_status, sample.co2_status) == (0, 0)
    assert (await gmp.read_co2_pct()).unit == "%"
    assert (await gmp.read_temp_c()).unit == "degC"


async def test_gmp_status_and_missing_data(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GmpSim(link)
    _, hub = await modbus([sim], framing="rtu")
    gmp = VaisalaGMP25x(hub, clock=clock)

    sim.co2_status = 256
    reading = await gmp.read_co2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason == "status: CO2 status 256 (measurement not ready (start-up))"
    sim.co2_status = 0

    sim.not_available = True  # NaN instead of an exception, as Vaisala does
    reading = await gmp.read_co2_pct()
    assert reading.reason == "nan: device reports no valid value"
    assert math.isnan(reading.value)
    sim.not_available = False

    sim.device_status = 4  # warning only: value still usable
    sample = await gmp.read()
    assert sample.co2_pct.quality is Quality.GOOD
    assert sample.device_status == 4
    sim.device_status = 1 + 4
    reading = await gmp.read_co2_pct()
    assert reading.reason == "status: device status 5 (critical error, warning)"
    sim.device_status = 0

    link.co2_now_pct = 25.0  # GMP251 range is 0-20 %
    assert (await gmp.read_co2_pct()).reason.startswith("out_of_range: 25 %")


async def test_gmp_warmup_statuses(modbus: ModbusFactory, link: StaticPlantLink) -> None:
    sim_clock = ManualClock()
    sim = GmpSim(link, clock=sim_clock, warmup_s=10.0)
    _, hub = await modbus([sim])
    gmp = VaisalaGMP25x(hub, clock=sim_clock)
    assert (await gmp.read()).co2_status == 256
    sim_clock.advance(6.0)
    assert (await gmp.read()).co2_status == 2
    sim_clock.advance(5.0)
    assert (await gmp.read_co2_pct()).quality is Quality.GOOD


async def test_gmp_o2_compensation_write_verified(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GmpSim(link)
    _, hub = await modbus([sim], framing="rtu")
    gmp = VaisalaGMP25x(hub, clock=clock)
    await gmp.write_o2_compensation(1.5)
    assert sim.o2_compensation_pct == pytest.approx(1.5)
    await gmp.set_o2_compensation_mode(True)
    assert await hub.read_holding_registers(240, 0x0307, 1) == [1]
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        await gmp.write_o2_compensation(120.0)
    sim.faults.stuck = True  # acknowledged but not applied -> read-back mismatch
    with pytest.raises(WriteVerifyError) as err:
        await gmp.write_o2_compensation(5.0)
    assert err.value.quantity == "o2_compensation_pct"
    assert err.value.readback == pytest.approx(1.5)
    sim.faults.clear()
    with pytest.raises(ModbusDeviceError) as exc:  # GMP accepts FC16 only
        await hub.write_register(240, 0x0307, 0)
    assert exc.value.code == 1


async def test_gmp_modbus_exception_gives_bad(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GmpSim(link)
    _, hub = await modbus([sim])
    gmp = VaisalaGMP25x(hub, clock=clock)
    sim.faults.exception_code = 4
    sample = await gmp.read()
    assert sample.co2_pct.reason.startswith(
        "exception_response: modbus exception 4 server device failure"
    )
    assert sample.temp_c.quality is Quality.BAD
    sim.faults.clear()
    assert (await gmp.read_co2_pct()).quality is Quality.GOOD


async def test_hmp(modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock) -> None:
    sim = HmpSim(link)
    _, hub = await modbus([sim])
    hmp = VaisalaHMP(hub, clock=clock)
    sample = await hmp.read()
    assert sample.temp_c.value == pytest.approx(37.0)
    assert sample.rh_pct.value == pytest.approx(85.0)
    sim.not_available = True
    assert (await hmp.read_temp_c()).reason.startswith("nan")


@pytest.mark.parametrize("framing", ["socket", "rtu"])
async def test_pt100_channels_and_sentinels(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock, framing: Framing
) -> None:
    sim = Pt100Sim(link, sources={0: link.temp_c, 1: lambda: -5.3})
    _, hub = await modbus([sim], framing=framing)
    assert (await Pt100Transmitter(hub, clock=clock).read_temp_c()).value == pytest.approx(37.0)
    cold = await Pt100Transmitter(hub, channel=1, clock=clock).read_temp_c()
    assert cold.value == pytest.approx(-5.3)
    channels = await Pt100Transmitter(hub, clock=clock).read_channels(4)
    assert [r.quality for r in channels] == [Quality.GOOD, Quality.GOOD, Quality.BAD, Quality.BAD]
    assert channels[2].reason == "sentinel: 0x8000 (not available)"
    sim.open_channels.add(0)
    sim.open_sentinel = 0x7FFF
    assert (await Pt100Transmitter(hub, clock=clock).read_temp_c()).reason.startswith(
        "sentinel: 0x7FFF"
    )


async def test_pt100_garbled_rtu_frame_then_recovery(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = Pt100Sim(link, clock=clock)
    _, hub = await modbus([sim], framing="rtu")
    temp = Pt100Transmitter(hub, clock=clock)
    sim.faults.garble = True  # bad CRC: pymodbus drops the frame, so it looks like no reply
    reading = await temp.read_temp_c()
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith("timeout: no reply from unit 1")
    sim.faults.clear()
    assert (await temp.read_temp_c()).quality is Quality.GOOD

    sim.faults.start_drift(0.5)
    clock.advance(4.0)
    assert (await temp.read_temp_c()).value == pytest.approx(39.0)
