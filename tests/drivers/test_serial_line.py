"""SerialLine over a pty and over socket://: framing, routing, timeouts, reconnects."""

from __future__ import annotations

import asyncio

import pytest

from common.clock import ManualClock
from drivers.errors import BusDisconnectedError, DeviceTimeoutError
from drivers.transport.serial_line import Line, SerialLine
from drivers.transport.settings import SerialLineSettings
from simulators.devices.ascii_port import AsciiInstrumentSim, AsciiPortSim
from simulators.devices.harness import AsciiFactory, AsciiTransport


class Echo(AsciiInstrumentSim):
    """Answers ``ping N`` with ``pong N``; streams ``tick`` lines; raw ``eol`` configurable."""

    def __init__(self, eol: str = "\r\n") -> None:
        super().__init__()
        self.eol = eol
        self.streaming = False

    def handle(self, command: str) -> list[str]:
        if command.startswith("ping"):
            return ["junk before reply", "pong" + command[4:]]
        if command == "silent":
            return []
        return ["?"]

    def stream_lines(self) -> list[str]:
        return ["tick"] if self.streaming else []


def pong(text: str) -> bool:
    return text.startswith("pong")


@pytest.mark.parametrize("transport", ["tcp", "pty"])
@pytest.mark.parametrize("eol", ["\r", "\r\n", "\n"])
async def test_request_reply_with_any_line_ending(
    ascii_line: AsciiFactory, transport: AsciiTransport, eol: str
) -> None:
    sim, line = await ascii_line([Echo(eol)], transport=transport)
    heard: list[str] = []
    line.subscribe(lambda ln: heard.append(ln.text))
    for n in range(3):
        reply = await line.request(f"ping {n}", pong)
        assert reply.text == f"pong {n}"
    assert sim.commands == ["ping 0", "ping 1", "ping 2"]
    await asyncio.sleep(0.01)
    assert heard.count("junk before reply") == 3  # unclaimed lines go to subscribers


async def test_stream_lines_interleave_with_replies(ascii_line: AsciiFactory) -> None:
    echo = Echo()
    echo.streaming = True
    _, line = await ascii_line([echo], stream_interval_s=0.002)
    ticks: list[Line] = []
    unsubscribe = line.subscribe(ticks.append)
    for n in range(20):
        assert (await line.request(f"ping {n}", pong)).text == f"pong {n}"
    for _ in range(500):
        if sum(t.text == "tick" for t in ticks) >= 3:
            break
        await asyncio.sleep(0.002)
    assert sum(t.text == "tick" for t in ticks) >= 3
    assert {t.text for t in ticks} <= {"tick", "junk before reply"}
    unsubscribe()
    count = len(ticks)
    await asyncio.sleep(0.02)
    assert len(ticks) == count
    assert line.unrouted_lines > 0


async def test_timeout_and_timestamps(ascii_line: AsciiFactory, clock: ManualClock) -> None:
    _, line = await ascii_line([Echo()])
    with pytest.raises(DeviceTimeoutError) as err:
        await line.request("silent", pong, timeout_s=0.05)
    assert err.value.reason.startswith("timeout: no reply to 'silent'")
    clock.advance(5.0)
    reply = await line.request("ping", pong)
    assert reply.monotonic_s == clock.monotonic()
    assert reply.utc == clock.utc()


async def test_overlong_garbage_is_discarded(ascii_line: AsciiFactory) -> None:
    sim, line = await ascii_line([Echo()], max_line_bytes=64)
    for writer in list(sim._clients):  # raw bytes without terminator, as line noise would be
        writer.write(b"x" * 200)
    await asyncio.sleep(0.02)
    assert line.garbage_lines >= 1
    assert (await line.request("ping", pong)).text == "pong"


async def test_disconnect_fails_pending_request_then_reconnects(
    ascii_line: AsciiFactory,
) -> None:
    sim, line = await ascii_line([Echo()])
    generation = line.generation
    pending = asyncio.create_task(line.request("silent", pong, timeout_s=2.0))
    await asyncio.sleep(0.02)
    assert sim.disconnect() == 1
    with pytest.raises(BusDisconnectedError):
        await pending
    assert (await line.request("ping", pong)).text == "pong"
    assert line.generation == generation + 1


async def test_open_failure_backs_off(clock: ManualClock) -> None:
    sim = AsciiPortSim([Echo()])
    url = await sim.serve_tcp()
    await sim.close()  # nothing listens on that port any more
    line = SerialLine(SerialLineSettings(port=url, reconnect_initial_s=1.0), clock=clock)
    with pytest.raises(BusDisconnectedError, match="nothing listens on") as err:
        await line.open()
    assert err.value.keyword == "connection_refused"
    with pytest.raises(BusDisconnectedError, match="next attempt in"):
        await line.request("ping", pong)
    async with AsciiPortSim([Echo()]) as sim2:
        url2 = await sim2.serve_tcp()
        line2 = SerialLine(SerialLineSettings(port=url2), clock=clock)
        async with line2:
            assert (await line2.request("ping", pong)).text == "pong"
    await line.close()


async def test_open_waits_for_late_device() -> None:
    sim = AsciiPortSim([Echo()])
    url = await sim.serve_tcp()
    port = int(url.rsplit(":", 1)[1])
    await sim.close()
    late = AsciiPortSim([Echo()])

    async def start_later() -> None:
        await asyncio.sleep(0.15)
        await late.serve_tcp(port=port)

    line = SerialLine(SerialLineSettings(port=url))
    try:
        await asyncio.gather(line.open(wait_s=3.0), start_later())
        assert (await line.request("ping", pong)).text == "pong"
    finally:
        await line.close()
        await late.close()


async def test_closed_line_refuses(ascii_line: AsciiFactory) -> None:
    _, line = await ascii_line([Echo()])
    await line.close()
    assert not line.connected
    with pytest.raises(BusDisconnectedError, match="closed"):
        await line.request("ping", pong)
