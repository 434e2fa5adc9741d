"""MFC gas calibration: read back, detected when wrong, selected and verified where allowed.

A CO2 line's controller left on its Air calibration reports a wrong flow: the simulators start on
any gas (``gas=``) and can lack gas selection (``gas_select=False``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError

from common.clock import ManualClock
from drivers.alicat import AlicatModbus, AlicatSerial, gas_number
from drivers.alicat.serial_ascii import AlicatSerialConfig
from drivers.catalog import AlicatModbusConfig, Transports, ensure_gases, open_devices
from drivers.reading import Quality
from drivers.transport.settings import SerialLineSettings
from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim, AlicatState
from simulators.devices.ascii_port import AsciiPortSim
from simulators.devices.harness import AsciiFactory, ModbusFactory
from simulators.devices.link import StaticPlantLink

Mfc = AlicatSerial | AlicatModbus
MakeMfc = Callable[..., Awaitable[tuple[Mfc, AlicatState]]]
AIR, CO2 = gas_number("Air"), gas_number("CO2")


@pytest.fixture(params=["ascii", "modbus"])
def make_mfc(
    request: pytest.FixtureRequest,
    ascii_line: AsciiFactory,
    modbus: ModbusFactory,
    link: StaticPlantLink,
    clock: ManualClock,
) -> MakeMfc:
    async def make(
        *, gas: int, gas_select: bool = True, full_scale: float = 2.0
    ) -> tuple[Mfc, AlicatState]:
        if request.param == "ascii":
            sim = AlicatAsciiSim(
                link, "CO2", unit_id="B", full_scale=full_scale, gas=gas, gas_select=gas_select
            )
            _, line = await ascii_line([sim], name="mfc-rs232")
            mfc: Mfc = AlicatSerial(
                line, "B", full_scale_lpm=2.0, name="mfc-co2", clock=clock, expected_gas="CO2"
            )
            return mfc, sim.state
        msim = AlicatModbusSim(
            link, "CO2", unit=3, full_scale=full_scale, gas=gas, gas_select=gas_select
        )
        _, hub = await modbus([msim])
        mfc = AlicatModbus(
            hub, 3, full_scale_lpm=2.0, name="mfc-co2", clock=clock, expected_gas="CO2"
        )
        return mfc, msim.state

    return make


async def test_wrong_gas_is_detected_then_selected_and_verified(make_mfc: MakeMfc) -> None:
    mfc, state = await make_mfc(gas=AIR)
    await mfc.set_flow_lpm(1.0)
    flow = await mfc.read_flow_lpm()
    assert flow.quality is Quality.BAD  # the flow of a CO2 line measured on air is wrong
    assert flow.reason == (
        f"gas_mismatch: mfc-co2 ({mfc.where}) reports gas Air, the site file states CO2"
    )
    assert (await mfc.read_gas()).gas == "Air"

    check = await mfc.ensure_gas("CO2")
    assert check.ok, check.reason
    assert (check.found, check.reported, check.selected) == ("Air", "CO2", True)
    assert state.gas == CO2
    assert check.full_scale_lpm == (2.0 if isinstance(mfc, AlicatSerial) else None)
    assert "selected, was Air" in check.describe()
    assert (await mfc.read_flow_lpm()).quality is Quality.GOOD

    again = await mfc.ensure_gas("co2")  # already right: nothing sent
    assert again.ok
    assert not again.selected


async def test_an_instrument_without_gas_selection_is_reported(make_mfc: MakeMfc) -> None:
    mfc, state = await make_mfc(gas=AIR, gas_select=False)
    check = await mfc.ensure_gas("CO2")
    assert not check.ok
    assert check.reason.startswith(f"gas_select_refused: {mfc.where}"), check.reason
    assert check.reason.endswith("it reports Air")
    assert state.gas == AIR


async def test_verify_only_never_changes_the_gas(make_mfc: MakeMfc) -> None:
    mfc, state = await make_mfc(gas=AIR)
    check = await mfc.ensure_gas("CO2", select=False)
    assert check.reason == (
        f"gas_mismatch: {mfc.where} reports gas Air, the site file states CO2 "
        "(gas_select = 'verify': not changed)"
    )
    assert not check.selected
    assert state.gas == AIR


async def test_full_scale_read_back_differs_from_the_site_file(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    sim = AlicatAsciiSim(link, "CO2", full_scale=5.0, gas=CO2)
    _, line = await ascii_line([sim])
    mfc = AlicatSerial(line, full_scale_lpm=2.0, clock=clock)
    check = await mfc.ensure_gas("CO2")
    assert check.reason == (
        f"full_scale_mismatch: {mfc.where} reports full scale 5 L/min on CO2, "
        "the site file states 2 L/min"
    )
    assert check.full_scale_lpm == 5.0


def test_gas_comes_from_the_role_unless_stated() -> None:
    base = {"name": "m", "driver": "alicat_serial", "line": "l", "full_scale_lpm": 1.0}
    defaults = {"n2_mixer": "N2", "air_mixer": "Air", "o2_mixer": "O2", "co2_mixer": "CO2"}
    for role, gas in defaults.items():
        assert AlicatSerialConfig.model_validate({**base, "role": role}).expected_gas() == gas
    stated = AlicatSerialConfig.model_validate({**base, "role": "co2_mixer", "gas": "air"})
    assert stated.expected_gas() == "Air"
    with pytest.raises(ValidationError, match="unknown Alicat gas 'argon'"):
        AlicatModbusConfig.model_validate(
            {
                "name": "m",
                "driver": "alicat_modbus",
                "bus": "b",
                "unit": 1,
                "role": "n2_mixer",
                "full_scale_lpm": 1.0,
                "gas": "argon",
            }
        )


async def test_site_gas_checks_run_at_start(link: StaticPlantLink, clock: ManualClock) -> None:
    """Through the registry: the entry binds its check; ensure_gases runs every mixer's."""
    wrong = AlicatAsciiSim(link, "CO2", unit_id="B", full_scale=2.0, gas=AIR)
    fixed = AlicatAsciiSim(link, "N2", unit_id="C", full_scale=2.0, gas=AIR, gas_select=False)
    async with AsciiPortSim([wrong, fixed]) as port:
        url = await port.serve_tcp()
        transports = Transports.create(
            {}, {"mfc-rs232": SerialLineSettings(port=url, eol="\r", reply_timeout_s=0.2)}, clock
        )
        await transports.open()
        configs = [
            AlicatSerialConfig.model_validate(
                {
                    "name": name,
                    "driver": "alicat_serial",
                    "line": "mfc-rs232",
                    "unit_id": uid,
                    "role": role,
                    "full_scale_lpm": 2.0,
                }
            )
            for name, uid, role in (("mfc-co2", "B", "co2_mixer"), ("mfc-n2", "C", "n2_mixer"))
        ]
        roles = open_devices(configs, transports, clock)
        checks = await ensure_gases(roles)
        await transports.close()
    assert checks["co2_mixer"].ok, checks["co2_mixer"].reason
    assert checks["co2_mixer"].selected
    assert wrong.state.gas == CO2
    assert not checks["n2_mixer"].ok
    assert checks["n2_mixer"].reason.startswith(
        "gas_select_refused: line mfc-rs232, unit C did not answer the select command for N2"
    )
