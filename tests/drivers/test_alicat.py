"""Alicat MFC drivers (ASCII serial and Modbus) against their simulators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from common.clock import ManualClock
from drivers.alicat import AlicatModbus, AlicatSerial
from drivers.errors import ProtocolError, WriteVerifyError
from drivers.reading import Quality
from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim, AlicatState
from simulators.devices.faults import Faults
from simulators.devices.harness import AsciiFactory, AsciiTransport, Framing, ModbusFactory
from simulators.devices.link import StaticPlantLink

Mfc = AlicatSerial | AlicatModbus
MakeMfc = Callable[[StaticPlantLink, ManualClock], Awaitable[tuple[Mfc, AlicatState, Faults]]]


VARIANTS: list[tuple[AsciiTransport | None, Framing | None]] = [
    ("tcp", None),
    ("pty", None),
    (None, "socket"),
    (None, "rtu"),
]


@pytest.fixture(params=VARIANTS, ids=["ascii-tcp", "ascii-pty", "modbus-tcp", "modbus-rtu"])
def make_mfc(
    request: pytest.FixtureRequest, ascii_line: AsciiFactory, modbus: ModbusFactory
) -> MakeMfc:
    transport, framing = request.param

    async def make(link: StaticPlantLink, clock: ManualClock) -> tuple[Mfc, AlicatState, Faults]:
        if transport is not None:
            sim = AlicatAsciiSim(link, "N2", full_scale=5.0, clock=clock)
            _, line = await ascii_line([sim], transport=transport)
            return AlicatSerial(line, full_scale_lpm=5.0, clock=clock), sim.state, sim.faults
        msim = AlicatModbusSim(link, "N2", unit=7, full_scale=5.0, clock=clock)
        _, hub = await modbus([msim], framing=framing or "socket")
        return AlicatModbus(hub, 7, full_scale_lpm=5.0, clock=clock), msim.state, msim.faults

    return make


async def test_setpoint_flow_and_readback(
    make_mfc: MakeMfc, link: StaticPlantLink, clock: ManualClock
) -> None:
    mfc, _, _ = await make_mfc(link, clock)
    await mfc.start()
    await mfc.set_flow_lpm(1.25)
    assert link.setpoints_lpm["N2"] == pytest.approx(1.25)
    sample = await mfc.read()
    assert sample.flow_lpm.quality is Quality.GOOD
    assert sample.flow_lpm.value == pytest.approx(1.25)
    assert sample.setpoint_lpm.value == pytest.approx(1.25)
    assert sample.gas == "N2"
    assert sample.pressure_psia.unit == "psia"
    assert (await mfc.read_flow_lpm()).unit == "L/min"
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        await mfc.set_flow_lpm(6.0)


async def test_gas_select_and_hold(
    make_mfc: MakeMfc, link: StaticPlantLink, clock: ManualClock
) -> None:
    mfc, state, _ = await make_mfc(link, clock)
    await mfc.select_gas("CO2")
    assert state.gas == 4
    assert (await mfc.read()).gas == "CO2"
    with pytest.raises(ValueError, match="unknown Alicat gas"):
        await mfc.select_gas("XYZ")

    await mfc.set_flow_lpm(2.0)
    await mfc.hold_closed()
    assert link.setpoints_lpm["N2"] == 0.0
    sample = await mfc.read()
    assert sample.held
    assert sample.flow_lpm.quality is Quality.BAD
    assert sample.flow_lpm.reason == "status: HLD (valve hold, flow not under setpoint control)"
    await mfc.cancel_hold()
    assert link.setpoints_lpm["N2"] == pytest.approx(2.0)
    sample = await mfc.read()
    assert not sample.held
    assert sample.flow_lpm.value == pytest.approx(2.0)
    await mfc.hold()
    assert (await mfc.read()).held
    await mfc.cancel_hold()


async def test_status_codes_and_faults(
    make_mfc: MakeMfc, link: StaticPlantLink, clock: ManualClock
) -> None:
    mfc, state, faults = await make_mfc(link, clock)
    state.extra_status = {"MOV"}
    sample = await mfc.read()
    assert sample.flow_lpm.reason == "status: MOV (mass flow over range)"
    assert sample.pressure_psia.quality is Quality.GOOD
    state.extra_status = {"ADC"}
    sample = await mfc.read()
    assert all(
        r.reason == "status: ADC (internal ADC error)"
        for r in (sample.pressure_psia, sample.temp_c, sample.flow_lpm, sample.setpoint_lpm)
    )
    state.extra_status = set()

    faults.no_reply = True
    reading = await mfc.read_flow_lpm()
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith("timeout")
    faults.clear()
    assert (await mfc.read_flow_lpm()).quality is Quality.GOOD

    faults.stuck = True  # valve/firmware ignores the command -> verify fails loudly
    with pytest.raises(WriteVerifyError) as err:
        await mfc.set_flow_lpm(3.0)
    assert err.value.quantity == "setpoint_lpm"
    with pytest.raises(WriteVerifyError):
        await mfc.hold_closed()
    faults.clear()
    await mfc.set_flow_lpm(3.0)


async def test_ascii_garbled_frame_and_question_mark(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = AlicatAsciiSim(link, "O2", full_scale=1000.0, flow_unit="SCCM", gas=11)
    port, line = await ascii_line([sim])
    mfc = AlicatSerial(line, full_scale_lpm=1.0, flow_unit="SCCM", clock=clock)
    await mfc.set_flow_lpm(0.25)
    assert port.commands[-1] == "AS 250.000"
    assert link.setpoints_lpm["O2"] == pytest.approx(0.25)
    sim.faults.garble = True
    reading = await mfc.read_flow_lpm()
    assert reading.keyword == "protocol_error"
    assert "unrecognised frame layout" in reading.reason
    assert f"({line.label}, unit A)" in reading.reason  # names the line
    sim.faults.clear()
    with pytest.raises(ProtocolError, match=r"device replied '\?'"):
        await mfc._command("X")


async def test_ascii_multidrop_units(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    n2 = AlicatAsciiSim(link, "N2", unit_id="A", full_scale=5.0)
    co2 = AlicatAsciiSim(link, "CO2", unit_id="B", full_scale=1.0, gas=4)
    _, line = await ascii_line([n2, co2])
    mfc_a = AlicatSerial(line, "A", full_scale_lpm=5.0, clock=clock)
    mfc_b = AlicatSerial(line, "B", full_scale_lpm=1.0, clock=clock)
    await mfc_a.set_flow_lpm(4.0)
    await mfc_b.set_flow_lpm(0.2)
    assert link.setpoints_lpm == {"N2": 4.0, "CO2": pytest.approx(0.2)}
    assert (await mfc_b.read()).gas == "CO2"
    assert (await mfc_a.read_flow_lpm()).value == pytest.approx(4.0)


async def test_modbus_special_command_errors(
    modbus: ModbusFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = AlicatModbusSim(link, "N2", full_scale=5.0)
    _, hub = await modbus([sim])
    mfc = AlicatModbus(hub, full_scale_lpm=5.0, clock=clock)
    with pytest.raises(ProtocolError, match="32769 invalid command id"):
        await mfc._special(99, 0)
    with pytest.raises(ProtocolError, match="32770 invalid setting"):
        await mfc._special(6, 9)
