"""Golden frames from docs/protocols.md decode exactly, end to end through the drivers.

A scripted TCP peer answers byte-exact requests with byte-exact responses (RTU over TCP), so
these tests pin both what the drivers put on the wire and how they decode the reply.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
from pymodbus.framer import FramerRTU

from common.clock import ManualClock
from drivers.alicat.serial_ascii import AlicatSerial
from drivers.codec import RegisterType, WordOrder, decode, encode
from drivers.luminox import LuminOx
from drivers.reading import Quality
from drivers.register_map import ModbusRegisterDevice, RegisterMap, RegisterPoint
from drivers.relay_board import ModbusRelayBoard
from drivers.transport.modbus import ModbusHub
from drivers.transport.settings import ModbusRtuSettings
from drivers.vaisala import VaisalaGMP25x
from simulators.devices.ascii_port import AsciiInstrumentSim
from simulators.devices.harness import AsciiFactory


def crc(frame: bytes) -> bytes:
    """Append the Modbus CRC (low byte first) as computed by pymodbus."""
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


class ScriptedPeer(asyncio.Protocol):
    """Answers each exact request frame with its scripted response."""

    def __init__(self, script: dict[bytes, bytes], received: list[bytes]) -> None:
        self.script = script
        self.received = received
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        if self.transport is not None and data in self.script:
            self.transport.write(self.script[data])


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[dict[bytes, bytes], list[bytes], int]]:
    script: dict[bytes, bytes] = {}
    received: list[bytes] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: ScriptedPeer(script, received), "127.0.0.1", 0
    )
    try:
        yield script, received, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def test_golden_crcs_match_reference() -> None:
    assert crc(bytes.fromhex("F0 03 00 00 00 02")) == bytes.fromhex("F0 03 00 00 00 02 D1 2A")
    assert crc(bytes.fromhex("F0 03 04 D4 7A 43 E8")) == bytes.fromhex("F0 03 04 D4 7A 43 E8 33 AB")
    assert crc(bytes.fromhex("FE 04 00 03 00 01")) == bytes.fromhex("FE 04 00 03 00 01 D5 C5")
    assert crc(bytes.fromhex("01 05 00 00 FF 00")) == bytes.fromhex("01 05 00 00 FF 00 8C 3A")
    assert crc(bytes.fromhex("01 05 00 00 00 00")) == bytes.fromhex("01 05 00 00 00 00 CD CA")


def test_vaisala_test_registers_decode() -> None:
    assert decode([0xE666, 0xC2F6], RegisterType.FLOAT32, WordOrder.LITTLE) == pytest.approx(
        -123.45, abs=1e-4
    )
    assert encode(-123.45, RegisterType.FLOAT32, WordOrder.LITTLE) == [0xE666, 0xC2F6]
    assert decode([0xCFC7], RegisterType.INT16) == -12345
    assert encode(-12345, RegisterType.INT16) == [0xCFC7]
    assert decode([0x43E8, 0xD47A], RegisterType.FLOAT32) == pytest.approx(465.66, abs=1e-3)


async def test_gmp252_golden_frame(
    scripted: tuple[dict[bytes, bytes], list[bytes], int], clock: ManualClock
) -> None:
    script, received, port = scripted
    request = bytes.fromhex("F0 03 00 00 00 02 D1 2A")
    script[request] = bytes.fromhex("F0 03 04 D4 7A 43 E8 33 AB")
    # The driver reads 6 registers (CO2, compensation T, probe T) and the two status registers.
    six = crc(bytes.fromhex("F0 03 00 00 00 06"))
    script[six] = crc(bytes.fromhex("F0 03 0C D4 7A 43 E8 00 00 41 C8 00 00 42 14"))
    script[crc(bytes.fromhex("F0 03 08 00 00 02"))] = crc(bytes.fromhex("F0 03 04 00 00 00 00"))
    hub = ModbusHub(ModbusRtuSettings(port=f"socket://127.0.0.1:{port}", timeout_s=0.5))
    try:
        await hub.connect()
        assert await hub.read_holding_registers(240, 0x0000, 2) == [0xD47A, 0x43E8]
        assert received[-1] == request
        sample = await VaisalaGMP25x(hub, model="GMP252", clock=clock).read()
    finally:
        await hub.close()
    assert sample.co2_pct.quality is Quality.GOOD
    assert sample.co2_pct.value == pytest.approx(465.66 / 10_000, abs=1e-7)
    assert sample.temp_c.value == pytest.approx(37.0)
    assert (sample.device_status, sample.co2_status) == (0, 0)


async def test_senseair_s8_golden_frame_through_register_map(
    scripted: tuple[dict[bytes, bytes], list[bytes], int], clock: ManualClock
) -> None:
    script, received, port = scripted
    request = bytes.fromhex("FE 04 00 03 00 01 D5 C5")
    script[request] = bytes.fromhex("FE 04 02 01 90 AC D8")
    register_map = RegisterMap(
        points=(RegisterPoint(name="co2_ppm", kind="input", address=3, unit="ppm"),)
    )
    hub = ModbusHub(ModbusRtuSettings(port=f"socket://127.0.0.1:{port}", timeout_s=0.5))
    try:
        reading = await ModbusRegisterDevice(hub, 0xFE, register_map, clock=clock).read("co2_ppm")
    finally:
        await hub.close()
    assert received == [request]
    assert reading.value == 400.0
    assert reading.unit == "ppm"


async def test_relay_golden_frames(
    scripted: tuple[dict[bytes, bytes], list[bytes], int],
) -> None:
    script, received, port = scripted
    on, off = bytes.fromhex("01 05 00 00 FF 00 8C 3A"), bytes.fromhex("01 05 00 00 00 00 CD CA")
    script[on], script[off] = on, off  # the board echoes the request
    read_coil_0 = crc(bytes.fromhex("01 01 00 00 00 01"))
    hub = ModbusHub(ModbusRtuSettings(port=f"socket://127.0.0.1:{port}", timeout_s=0.5))
    board = ModbusRelayBoard(hub)
    try:
        script[read_coil_0] = crc(bytes.fromhex("01 01 01 01"))
        await board.set(0, True)
        script[read_coil_0] = crc(bytes.fromhex("01 01 01 00"))
        await board.set(0, False)
    finally:
        await hub.close()
    assert received == [on, read_coil_0, off, read_coil_0]


class FixedLines(AsciiInstrumentSim):
    """Replies with canned lines, recording commands."""

    def __init__(self, replies: dict[str, str], eol: str) -> None:
        super().__init__()
        self.replies = replies
        self.eol = eol
        self.stream: list[str] = []

    def handle(self, command: str) -> list[str]:
        return [self.replies[command]] if command in self.replies else []

    def stream_lines(self) -> list[str]:
        return self.stream


async def test_alicat_golden_poll_line(ascii_line: AsciiFactory, clock: ManualClock) -> None:
    golden = "A +014.62 +021.89 +000.00 +000.00 +078.95     N2"
    peer = FixedLines({"A": golden}, eol="\r")
    sim, line = await ascii_line([peer])
    mfc = AlicatSerial(line, "A", full_scale_lpm=0.5, flow_unit="SCCM", clock=clock)
    sample = await mfc.read()
    assert sim.commands == ["A"]
    assert sample.pressure_psia.value == pytest.approx(14.62)
    assert sample.temp_c.value == pytest.approx(21.89)
    assert sample.vol_flow_lpm.value == 0.0
    assert sample.flow_lpm.value == 0.0
    assert sample.setpoint_lpm.value == pytest.approx(0.07895)
    assert sample.gas == "N2"
    assert sample.status == frozenset()
    assert all(
        r.quality is Quality.GOOD
        for r in (sample.pressure_psia, sample.temp_c, sample.flow_lpm, sample.setpoint_lpm)
    )


async def test_luminox_golden_stream_line(ascii_line: AsciiFactory, clock: ManualClock) -> None:
    golden = "O 0213.1 T +19.3 P 1010 % 020.92 e 0000"
    peer = FixedLines({"M 0": "M 00"}, eol="\r\n")
    peer.stream = [golden]
    _, line = await ascii_line([peer], stream_interval_s=0.01)
    sensor = LuminOx(line, mode="stream", clock=clock)
    await sensor.start()
    for _ in range(100):
        sample = await sensor.read()
        if sample.o2_pct.quality is Quality.GOOD:
            break
        await asyncio.sleep(0.01)
    assert sample.o2_pct.value == pytest.approx(20.92)
    assert sample.ppo2_mbar.value == pytest.approx(213.1)
    assert sample.temp_c.value == pytest.approx(19.3)
    assert sample.pressure_mbar.value == 1010.0
    assert sample.status == "0000"
    assert sample.o2_pct.unit == "%"
    assert not math.isnan(sample.o2_pct.value)
    await sensor.close()
