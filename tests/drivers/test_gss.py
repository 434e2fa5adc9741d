"""GSS SprintIR/ExplorIR CO2 driver against its simulator."""

from __future__ import annotations

import asyncio

import pytest

from common.clock import ManualClock
from drivers.gss import GssCO2
from drivers.reading import Quality
from simulators.devices.gss import GssSim
from simulators.devices.harness import AsciiFactory, AsciiTransport
from simulators.devices.link import StaticPlantLink


@pytest.mark.parametrize("transport", ["tcp", "pty"])
@pytest.mark.parametrize("leading_space", [False, True])
async def test_poll_with_multiplier(
    ascii_line: AsciiFactory,
    link: StaticPlantLink,
    clock: ManualClock,
    transport: AsciiTransport,
    leading_space: bool,
) -> None:
    sim = GssSim(link, multiplier=100, leading_space=leading_space)
    port, line = await ascii_line([sim], transport=transport)
    sensor = GssCO2(line, clock=clock, expected_multiplier=100)
    link.co2_now_pct = 5.0  # 50 000 ppm -> "Z 00500" x 100
    reading = await sensor.read_co2_pct()
    assert reading.quality is Quality.GOOD
    assert reading.value == pytest.approx(5.0)
    assert reading.unit == "%"
    assert sensor.multiplier == 100
    assert sim.mode == 2
    assert port.commands == ["K 2", ".", "Z"]


async def test_stream_mode(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GssSim(link, multiplier=10)
    _, line = await ascii_line([sim], stream_interval_s=0.005)
    sensor = GssCO2(line, mode="stream", clock=clock, max_age_s=1.0)
    link.co2_now_pct = 0.05
    await sensor.start()
    for _ in range(200):
        reading = await sensor.read_co2_pct()
        if reading.quality is Quality.GOOD:
            break
        await asyncio.sleep(0.005)
    assert reading.value == pytest.approx(0.05)
    sim.faults.no_reply = True
    await asyncio.sleep(0.02)
    clock.advance(1.5)
    assert (await sensor.read_co2_pct()).quality is Quality.STALE
    await sensor.close()


async def test_wrong_multiplier_is_bad(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GssSim(link, multiplier=100)
    sim.reported_multiplier = 10
    _, line = await ascii_line([sim])
    reading = await GssCO2(line, clock=clock, expected_multiplier=100).read_co2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason == (
        f"protocol_error: gss-co2 on {line.label}: multiplier 10, expected 100 "
        "(wrong sensor range?)"
    )
    sim.reported_multiplier = 7
    reading = await GssCO2(line, clock=clock).read_co2_pct()
    assert reading.reason == (
        f"protocol_error: gss-co2 on {line.label}: multiplier 7 not in (1, 10, 100)"
    )


async def test_faults_and_range(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = GssSim(link, multiplier=10, clock=clock)
    _, line = await ascii_line([sim])
    sensor = GssCO2(line, clock=clock, range_pct=(0.0, 20.0))
    assert (await sensor.read_co2_pct()).quality is Quality.GOOD

    sim.faults.garble = True
    reading = await sensor.read_co2_pct()
    assert reading.reason.startswith(
        f"protocol_error: gss-co2 on {line.label}: bad Z field '#####'"
    )
    sim.faults.clear()

    sim.faults.no_reply = True
    reading = await sensor.read_co2_pct()
    assert reading.reason.startswith("timeout: no reply to 'Z' on line ")
    sim.faults.clear()
    assert (await sensor.read_co2_pct()).quality is Quality.GOOD

    link.co2_now_pct = 25.0
    reading = await sensor.read_co2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith("out_of_range: 25 %")

    class Confused(GssSim):
        def handle(self, command: str) -> list[str]:
            return ["?"] if command == "Z" else super().handle(command)

    _, line2 = await ascii_line([Confused(link)])
    reading = await GssCO2(line2, clock=clock).read_co2_pct()
    assert reading.reason == (
        f"protocol_error: gss-co2 on {line2.label}: device replied '?' (command not understood)"
    )
