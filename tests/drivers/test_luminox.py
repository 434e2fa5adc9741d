"""LuminOx driver against the LuminOx simulator on a pty and on socket://."""

from __future__ import annotations

import asyncio

import pytest

from common.clock import ManualClock
from drivers.luminox import LuminOx, LuminOxSample
from drivers.reading import Quality
from drivers.transport.serial_line import Line
from simulators.devices.harness import AsciiFactory, AsciiTransport
from simulators.devices.link import StaticPlantLink
from simulators.devices.luminox import LuminOxSim


async def next_stream_sample(sensor: LuminOx, line_count: list[Line]) -> LuminOxSample:
    """Wait (wall time, bounded) until a new stream line has arrived, then read."""
    seen = len(line_count)
    for _ in range(200):
        if len(line_count) > seen:
            break
        await asyncio.sleep(0.005)
    return await sensor.read()


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_poll_mode_reads_plant_values(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock, transport: AsciiTransport
) -> None:
    sim = LuminOxSim(link)
    port, line = await ascii_line([sim], transport=transport)
    sensor = LuminOx(line, clock=clock)
    await sensor.start()
    assert sim.mode == 1
    link.o2_now_pct, link.temp_now_c = 1.5, 37.2
    sample = await sensor.read()
    assert sample.o2_pct.quality is Quality.GOOD
    assert sample.o2_pct.value == pytest.approx(1.5)
    assert sample.ppo2_mbar.value == pytest.approx(15.2, abs=0.05)
    assert sample.temp_c.value == pytest.approx(37.2)
    assert sample.pressure_mbar.value == 1013.0
    assert sample.o2_pct.monotonic_s == clock.monotonic()
    assert (await sensor.read_o2_pct()).value == pytest.approx(1.5)
    assert port.commands == ["M 1", "A", "A"]


async def test_stream_mode_and_staleness(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = LuminOxSim(link)
    _, line = await ascii_line([sim], stream_interval_s=0.005)
    lines: list[Line] = []
    line.subscribe(lines.append)
    sensor = LuminOx(line, mode="stream", clock=clock, max_age_s=3.0, stream_period_s=0.005)
    first = await sensor.read()  # starts the sensor, then waits for the first line
    assert first.o2_pct.quality is Quality.GOOD, first.o2_pct.reason
    link.o2_now_pct = 5.0
    sample = await next_stream_sample(sensor, lines)
    assert sample.o2_pct.quality is Quality.GOOD
    assert sample.o2_pct.value == pytest.approx(5.0)

    sim.faults.no_reply = True  # stream stops
    await asyncio.sleep(0.03)
    clock.advance(3.5)
    stale = await sensor.read()
    assert stale.o2_pct.quality is Quality.STALE
    assert stale.o2_pct.reason.startswith("stale: 3.5 s old")
    assert stale.o2_pct.value == pytest.approx(5.0)  # last value kept, but not trusted
    assert not stale.o2_pct.trusted

    sim.faults.clear()
    recovered = await next_stream_sample(sensor, lines)
    assert recovered.o2_pct.quality is Quality.GOOD
    await sensor.close()


async def test_status_dashes_and_range(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = LuminOxSim(link)
    _, line = await ascii_line([sim])
    sensor = LuminOx(line, clock=clock)

    sim.status = "0004"
    sample = await sensor.read()
    assert sample.status == "0004"
    for reading in (sample.o2_pct, sample.ppo2_mbar, sample.temp_c, sample.pressure_mbar):
        assert reading.quality is Quality.BAD
        assert reading.reason == f"status: luminox on {line.label}: sensor error e 0004"
    sim.status = "0000"

    sim.has_barometer = False  # LOX-01: P and % are dashes, ppO2 still valid
    sample = await sensor.read()
    assert sample.o2_pct.reason == f"not_available: luminox on {line.label}: % field is dashes"
    assert sample.pressure_mbar.quality is Quality.BAD
    assert sample.ppo2_mbar.quality is Quality.GOOD
    sim.has_barometer = True

    link.o2_now_pct = 30.0
    sample = await sensor.read()
    assert sample.o2_pct.quality is Quality.BAD
    assert sample.o2_pct.reason.startswith("out_of_range: 30 %")


async def test_faults_give_bad_and_recover(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = LuminOxSim(link, clock=clock)
    port, line = await ascii_line([sim])
    sensor = LuminOx(line, clock=clock)
    assert (await sensor.read_o2_pct()).quality is Quality.GOOD

    sim.faults.no_reply = True
    reading = await sensor.read_o2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith("timeout: no reply to 'A'")
    sim.faults.clear()
    assert (await sensor.read_o2_pct()).quality is Quality.GOOD

    sim.faults.garble = True
    reading = await sensor.read_o2_pct()
    assert reading.reason.startswith(f"protocol_error: luminox on {line.label}: bad O field")
    sim.faults.clear()
    assert (await sensor.read_o2_pct()).quality is Quality.GOOD

    sim.faults.dropout(10.0)
    assert (await sensor.read_o2_pct()).reason.startswith("timeout")
    clock.advance(10.0)
    assert (await sensor.read_o2_pct()).quality is Quality.GOOD

    sim.faults.stuck = True
    frozen = (await sensor.read_o2_pct()).value
    link.o2_now_pct = 2.0
    assert (await sensor.read_o2_pct()).value == frozen  # a stuck sensor still looks GOOD
    sim.faults.clear()
    assert (await sensor.read_o2_pct()).value == pytest.approx(2.0)

    sim.faults.start_drift(0.1)  # +0.1 %/s
    clock.advance(10.0)
    assert (await sensor.read_o2_pct()).value == pytest.approx(3.0)
    sim.faults.clear()

    assert port.disconnect() == 1  # pulled cable: reconnect on the next poll, re-set mode
    await asyncio.sleep(0.02)
    qualities = [(await sensor.read_o2_pct()).quality for _ in range(2)]
    assert qualities[-1] is Quality.GOOD
    assert port.commands.count("M 1") == 2


async def test_error_reply_is_bad_with_reason(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    class Broken(LuminOxSim):
        def handle(self, command: str) -> list[str]:
            return ["E 02"] if command == "A" else super().handle(command)

    _, line = await ascii_line([Broken(link)])
    reading = await LuminOx(line, clock=clock).read_o2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason == (
        f"protocol_error: luminox on {line.label}: device error E 02 (invalid frame)"
    )


async def test_barometer_role_serves_the_last_reports_pressure_without_a_transaction(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    """``barometer = true``: the 'pressure' role (mbar) for the pericellular estimate (§B7)."""
    from drivers.luminox import LuminOxConfig

    sim = LuminOxSim(link, pressure_mbar=948.0)
    port, line = await ascii_line([sim])
    config = LuminOxConfig(name="o2-lox", driver="luminox", line="o2-uart", barometer=True)
    assert config.served_roles() == ["o2", "pressure"]
    assert LuminOxConfig(name="x", driver="luminox", line="l").served_roles() == ["o2"]
    sensor = LuminOx(line, clock=clock, max_age_s=3.0)
    before = await sensor.read_pressure_mbar()
    assert before.quality is Quality.BAD
    assert before.reason.startswith("not_available")
    await sensor.start()
    await sensor.read_o2_pct()
    pressure = await sensor.read_pressure_mbar()
    assert pressure.quality is Quality.GOOD
    assert pressure.value == 948.0
    assert port.commands == ["M 1", "A"]  # the pressure cost no transaction of its own
    clock.advance(3.5)
    assert (await sensor.read_pressure_mbar()).quality is Quality.STALE
