"""Every driver family x every wire fault: documented quality and reason within two polls,
recovery within two polls after the fault clears.

Modbus families run on RTU framing over TCP (so ``garble`` is a bad CRC); ASCII families on
``socket://`` (so ``disconnect`` drops the TCP connection like a pulled cable).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from common.clock import ManualClock
from drivers.alicat import AlicatModbus, AlicatSerial
from drivers.errors import REASON_KEYWORDS
from drivers.gss import GssCO2
from drivers.luminox import LuminOx
from drivers.pt100 import Pt100Transmitter
from drivers.reading import Quality, Reading
from drivers.register_map import ModbusRegisterDevice, RegisterMap, RegisterPoint
from drivers.vaisala import VaisalaGMP25x, VaisalaHMP
from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim
from simulators.devices.faults import Faults
from simulators.devices.gss import GssSim
from simulators.devices.harness import AsciiFactory, ModbusFactory
from simulators.devices.link import StaticPlantLink
from simulators.devices.luminox import LuminOxSim
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.register_map import RegisterMapSim
from simulators.devices.vaisala import GmpSim, HmpSim

Read = Callable[[], Awaitable[Reading]]


@dataclass
class Rig:
    read: Read
    faults: Faults
    disconnect: Callable[[], int]
    modbus: bool


Builder = Callable[[ModbusFactory, AsciiFactory, StaticPlantLink, ManualClock], Awaitable[Rig]]

O2_MAP = RegisterMap(points=(RegisterPoint(name="o2_pct", address=0, scale=0.1, unit="%"),))


async def gmp(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = GmpSim(link, clock=c)
    bus, hub = await m([sim], framing="rtu")
    return Rig(VaisalaGMP25x(hub, clock=c).read_co2_pct, sim.faults, bus.disconnect_clients, True)


async def hmp(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = HmpSim(link, clock=c)
    bus, hub = await m([sim], framing="rtu")
    return Rig(VaisalaHMP(hub, clock=c).read_temp_c, sim.faults, bus.disconnect_clients, True)


async def pt100(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = Pt100Sim(link, clock=c)
    bus, hub = await m([sim], framing="rtu")
    read = Pt100Transmitter(hub, clock=c).read_temp_c
    return Rig(read, sim.faults, bus.disconnect_clients, True)


async def alicat_mb(
    m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock
) -> Rig:
    sim = AlicatModbusSim(link, "N2", clock=c)
    bus, hub = await m([sim], framing="rtu")
    read = AlicatModbus(hub, full_scale_lpm=5.0, clock=c).read_flow_lpm
    return Rig(read, sim.faults, bus.disconnect_clients, True)


async def regmap(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = RegisterMapSim(O2_MAP, {"o2_pct": link.o2_pct}, clock=c)
    bus, hub = await m([sim], framing="rtu")
    device = ModbusRegisterDevice(hub, 1, O2_MAP, clock=c)

    async def read() -> Reading:
        return await device.read("o2_pct")

    return Rig(read, sim.faults, bus.disconnect_clients, True)


async def luminox(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = LuminOxSim(link, clock=c)
    port, line = await a([sim])
    return Rig(LuminOx(line, clock=c).read_o2_pct, sim.faults, port.disconnect, False)


async def gss(m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock) -> Rig:
    sim = GssSim(link, clock=c)
    port, line = await a([sim])
    return Rig(GssCO2(line, clock=c).read_co2_pct, sim.faults, port.disconnect, False)


async def alicat_ascii(
    m: ModbusFactory, a: AsciiFactory, link: StaticPlantLink, c: ManualClock
) -> Rig:
    sim = AlicatAsciiSim(link, "N2", clock=c)
    port, line = await a([sim])
    read = AlicatSerial(line, full_scale_lpm=5.0, clock=c).read_flow_lpm
    return Rig(read, sim.faults, port.disconnect, False)


FAMILIES: dict[str, Builder] = {
    "gmp25x": gmp,
    "hmp": hmp,
    "pt100": pt100,
    "alicat-modbus": alicat_mb,
    "register-map": regmap,
    "luminox": luminox,
    "gss": gss,
    "alicat-ascii": alicat_ascii,
}
FAULTS = ["no_reply", "garble", "dropout", "exception", "disconnect"]
ASCII_FAMILIES = {"luminox", "gss", "alicat-ascii"}
CASES = [
    (family, fault)
    for family in FAMILIES
    for fault in FAULTS
    if not (fault == "exception" and family in ASCII_FAMILIES)  # no such thing on ASCII lines
]


def inject(rig: Rig, fault: str) -> str | None:
    """Inject ``fault``; return the expected reason prefix (None: fault may heal silently)."""
    if fault == "no_reply":
        rig.faults.no_reply = True
        return "timeout"
    if fault == "dropout":
        rig.faults.dropout(30.0)
        return "timeout"
    if fault == "garble":
        rig.faults.garble = True
        return "timeout" if rig.modbus else "protocol_error"  # bad CRC is dropped silently
    if fault == "exception":
        rig.faults.exception_code = 4
        return "exception_response: modbus exception 4"
    rig.disconnect()
    return None


@pytest.mark.parametrize(("family", "fault"), CASES)
async def test_fault_gives_documented_reason_then_recovers(
    family: str,
    fault: str,
    modbus: ModbusFactory,
    ascii_line: AsciiFactory,
    link: StaticPlantLink,
    clock: ManualClock,
) -> None:
    rig = await FAMILIES[family](modbus, ascii_line, link, clock)
    assert (await rig.read()).quality is Quality.GOOD
    expected = inject(rig, fault)
    if expected is None:  # disconnect: reconnects by itself; at most one BAD poll
        await asyncio.sleep(0.02)
        polls = [await rig.read() for _ in range(2)]
        assert polls[-1].quality is Quality.GOOD
        for r in polls:
            assert r.quality is Quality.GOOD or r.reason.startswith(("disconnected", "timeout"))
        return
    polls = [await rig.read() for _ in range(2)]
    bad = [r for r in polls if r.quality is Quality.BAD]
    assert bad, f"{family}/{fault}: no BAD reading within two polls: {polls}"
    assert bad[0].reason.startswith(expected), bad[0].reason
    assert all(r.keyword in REASON_KEYWORDS for r in polls), polls
    assert re.search(r"\b(bus|line) \S", bad[0].reason), bad[0].reason  # names its transport
    assert all(not r.trusted for r in polls)

    rig.faults.clear()
    clock.advance(30.0)  # past any dropout and any unit skip period
    recovered = [await rig.read() for _ in range(2)]
    assert recovered[-1].quality is Quality.GOOD, recovered
