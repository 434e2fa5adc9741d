"""ModbusHub against pymodbus servers on loopback: TCP and RTU-over-TCP, faults, reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.clock import ManualClock
from drivers.errors import BusDisconnectedError, DeviceTimeoutError, ModbusDeviceError
from drivers.pt100 import Pt100Transmitter
from drivers.reading import Quality
from drivers.transport.modbus import ModbusHub
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from drivers.vaisala import VaisalaGMP25x
from simulators.devices.harness import Framing, ModbusFactory
from simulators.devices.link import StaticPlantLink
from simulators.devices.modbus_bus import ModbusBusSim
from simulators.devices.null_modem import PtyNullModem
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.vaisala import GmpSim

TIMEOUT_S = 0.2

FRAMINGS = ["socket", "rtu"]


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_read_write_round_trip(
    modbus: ModbusFactory, link: StaticPlantLink, framing: Framing
) -> None:
    _, hub = await modbus([GmpSim(link)], framing=framing)
    assert hub.connected
    await hub.write_registers(240, 0x020E, [0x0000, 0x41A8])  # 21.0 as LSW-first float
    assert await hub.read_holding_registers(240, 0x020E, 2) == [0x0000, 0x41A8]
    assert await hub.read_holding_registers(240, 0x1F00, 3) == [0xCFC7, 0xE666, 0xC2F6]
    assert hub.stats.ok == 3
    assert hub.stats.timeouts == 0


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_exception_response_is_typed(
    modbus: ModbusFactory, link: StaticPlantLink, framing: Framing
) -> None:
    sim = GmpSim(link)
    _, hub = await modbus([sim], framing=framing)
    with pytest.raises(ModbusDeviceError) as err:
        await hub.read_holding_registers(240, 0x5000, 2)
    assert err.value.code == 2
    assert err.value.reason.startswith(
        "exception_response: modbus exception 2 illegal data address"
    )
    assert f"unit 240 on {hub.label}" in err.value.reason
    sim.faults.exception_code = 4
    with pytest.raises(ModbusDeviceError) as err:
        await hub.read_holding_registers(240, 0x0000, 2)
    assert err.value.code == 4
    sim.faults.clear()
    assert len(await hub.read_holding_registers(240, 0x0000, 2)) == 2
    assert hub.unit_failures(240) == 0  # an exception is an answer, not a timeout


async def test_silent_unit_degrades_only_itself(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    gmp, pt100 = GmpSim(link), Pt100Sim(link, unit=3)
    _, hub = await modbus([gmp, pt100], framing="rtu", unit_skip_after=2)
    co2 = VaisalaGMP25x(hub, 240, clock=clock)
    temp = Pt100Transmitter(hub, 3, clock=clock)
    gmp.faults.no_reply = True

    for _ in range(2):
        reading = await co2.read_co2_pct()
        assert reading.quality is Quality.BAD
        assert reading.reason.startswith("timeout: no reply from unit 240")
        started = time.perf_counter()
        assert (await temp.read_temp_c()).quality is Quality.GOOD
        assert time.perf_counter() - started < TIMEOUT_S  # unit 3 is not slowed down
    assert hub.unit_failures(240) == 2

    # Third poll: unit 240 is skipped without touching the bus.
    started = time.perf_counter()
    reading = await co2.read_co2_pct()
    assert time.perf_counter() - started < TIMEOUT_S / 2
    assert reading.reason.startswith("timeout: unit 240")
    assert "next probe in" in reading.reason
    assert hub.stats.skipped == 1

    # Fault clears; after the skip period the unit is probed again and recovers.
    gmp.faults.clear()
    clock.advance(1.2)
    assert (await co2.read_co2_pct()).quality is Quality.GOOD
    assert hub.unit_failures(240) == 0


async def test_unknown_unit_times_out_without_disturbing_others(
    modbus: ModbusFactory, link: StaticPlantLink
) -> None:
    _, hub = await modbus([Pt100Sim(link)], framing="rtu")
    with pytest.raises(DeviceTimeoutError):
        await hub.read_holding_registers(99, 0, 1)
    assert await hub.read_holding_registers(1, 250, 6) == [0, 0, 0, 1, 3, 0]


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_reconnects_after_server_drops_connection(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock, framing: Framing
) -> None:
    bus, hub = await modbus([Pt100Sim(link)], framing=framing)
    temp = Pt100Transmitter(hub, clock=clock)
    assert (await temp.read_temp_c()).quality is Quality.GOOD
    assert bus.disconnect_clients() == 1
    await asyncio.sleep(0.02)  # let the client notice the closed socket
    qualities = [(await temp.read_temp_c()).quality for _ in range(2)]
    assert Quality.GOOD in qualities
    assert hub.stats.connects == 2


async def test_server_down_backs_off_then_recovers(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    bus, hub = await modbus([Pt100Sim(link)], reconnect_initial_s=1.0)
    temp = Pt100Transmitter(hub, clock=clock)
    await bus.stop()
    await asyncio.sleep(0.02)
    first = await temp.read_temp_c()
    assert first.quality is Quality.BAD
    assert first.reason.startswith(f"connection_refused: {hub.label}: nothing listens on")
    failures = hub.stats.connect_failures
    second = await temp.read_temp_c()  # within the backoff: no connect attempt at all
    assert second.keyword == "connection_refused"  # one keyword for the whole outage
    assert "next attempt in" in second.reason
    assert hub.stats.connect_failures == failures
    state = hub.state()
    assert not state.connected
    assert state.latest_failure is not None
    assert state.latest_failure.keyword == "connection_refused"
    await bus.start()  # same port
    clock.advance(1.2)
    assert (await temp.read_temp_c()).quality is Quality.GOOD


async def test_connect_waits_for_late_server(link: StaticPlantLink) -> None:
    bus = ModbusBusSim([Pt100Sim(link)])
    await bus.start()
    port = bus.port
    await bus.stop()

    async def start_later() -> None:
        await asyncio.sleep(0.15)
        await bus.start()

    hub = ModbusHub(ModbusTcpSettings(host="127.0.0.1", port=port, timeout_s=0.2))
    try:
        await asyncio.gather(hub.connect(wait_s=3.0), start_later())
        assert hub.connected
        assert hub.stats.connect_failures >= 1
        assert await hub.read_holding_registers(1, 253, 1) == [1]
    finally:
        await hub.close()
        await bus.stop()


async def test_concurrent_requests_share_one_client(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    _, hub = await modbus([GmpSim(link), Pt100Sim(link)], framing="rtu")
    co2 = VaisalaGMP25x(hub, clock=clock)
    temp = Pt100Transmitter(hub, clock=clock)
    readings = await asyncio.gather(
        *(r() for _ in range(10) for r in (co2.read_co2_pct, temp.read_temp_c))
    )
    assert all(r.quality is Quality.GOOD for r in readings)
    assert hub.stats.requests == 30  # GMP: 2 transactions per read, PT100: 1


async def test_closed_hub_refuses_requests(modbus: ModbusFactory, link: StaticPlantLink) -> None:
    _, hub = await modbus([Pt100Sim(link)])
    await hub.close()
    assert not hub.connected
    with pytest.raises(BusDisconnectedError, match="closed"):
        await hub.read_holding_registers(1, 0, 1)


async def test_rtu_on_a_real_serial_port(link: StaticPlantLink, clock: ManualClock) -> None:
    """pymodbus's serial client (termios, add_reader) over a pty null-modem, two units."""
    async with PtyNullModem() as (server_end, client_end):
        gmp, pt100 = GmpSim(link), Pt100Sim(link, unit=3)
        bus = ModbusBusSim([gmp, pt100], serial_port=server_end)
        await bus.start()
        settings = ModbusRtuSettings(port=client_end, baudrate=19200, stopbits=2, timeout_s=0.2)
        hub = ModbusHub(settings, clock=clock)
        try:
            await hub.connect()
            co2 = VaisalaGMP25x(hub, clock=clock)
            temp = Pt100Transmitter(hub, 3, clock=clock)
            link.co2_now_pct = 5.0
            assert (await co2.read_co2_pct()).value == pytest.approx(5.0)
            assert (await temp.read_temp_c()).value == pytest.approx(37.0)
            gmp.faults.garble = True  # bad CRC on a real serial line: dropped, times out
            assert (await co2.read_co2_pct()).reason.startswith("timeout")
            assert (await temp.read_temp_c()).quality is Quality.GOOD
            gmp.faults.clear()
            assert (await co2.read_co2_pct()).quality is Quality.GOOD
        finally:
            await hub.close()
            await bus.stop()
