"""Every driver error mapped with its bus or line; start-up that tells why; stream first reads.

Real stacks only: pymodbus clients and servers (simulators/devices), pyserial on real ptys
(``os.openpty``, :class:`PtyNullModem`), loopback sockets, and ``hypoxia devices read`` as a
subprocess.

What a Linux pty refuses (checked here, docs/protocols.md §6.1): the pty driver keeps 8 data
bits and no parity whatever is asked, and glibc's ``tcsetattr`` fails with ``EINVAL`` when none
of the requested changes took effect. pyserial then raises a bare ``termios.error(22, 'Invalid
argument')`` -- the error seen on site -- so a pty *does* refuse ``parity="E"`` and
``bytesize=7``, and the tests use it. A path that is not a terminal (``/dev/null``, a regular
file) fails earlier, in ``tcgetattr`` (``ENOTTY``).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import re
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from pymodbus.exceptions import (
    ConnectionException,
    ModbusException,
    ModbusIOException,
    ParameterException,
)

from common.clock import ManualClock
from drivers.errors import (
    REASON_KEYWORDS,
    LineSettingRefusedError,
    OpenFailedError,
    RefusedSetting,
)
from drivers.gss import GssCO2
from drivers.luminox import LuminOx
from drivers.pt100 import Pt100Transmitter
from drivers.reading import Quality
from drivers.registry import Transports
from drivers.transport.failures import serial_open_error, unapplied_settings
from drivers.transport.modbus import ModbusHub
from drivers.transport.serial_line import SerialLine, first_line_wait_s
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings, SerialLineSettings
from drivers.vaisala import VaisalaGMP25x
from simulators.devices.gss import GssSim
from simulators.devices.harness import AsciiFactory, ModbusFactory
from simulators.devices.link import StaticPlantLink
from simulators.devices.luminox import LuminOxSim
from simulators.devices.modbus_bus import ModbusBusSim
from simulators.devices.null_modem import PtyNullModem
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.vaisala import GmpSim
from tests.cli import hypoxia
from tests.service_kit import free_port, site_file

REFUSED = [
    ({"parity": "E"}, ["parity 'E'"]),
    ({"bytesize": 7}, ["bytesize 7"]),
    ({"parity": "E", "bytesize": 7}, ["bytesize 7", "parity 'E'"]),
]
IDS = ["parity-E", "bytesize-7", "both"]


@pytest.fixture
def pty_path() -> Iterator[str]:
    """A fresh pty; its slave path is what a driver opens (nobody answers)."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def refused_text(port: str, settings: list[str]) -> str:
    return "; ".join(f"{s} refused by {port} (termios: Invalid argument)" for s in settings)


# ------------------------------------------------------------------ line settings on real ptys
@pytest.mark.parametrize(("kwargs", "named"), REFUSED, ids=IDS)
async def test_serial_line_names_the_refused_setting(
    pty_path: str, clock: ManualClock, kwargs: dict[str, object], named: list[str]
) -> None:
    settings = SerialLineSettings.model_validate({"port": pty_path, **kwargs})
    line = SerialLine(settings, clock=clock, name="o2-uart")
    with pytest.raises(LineSettingRefusedError) as err:
        await line.open()
    assert err.value.reason == (
        f"line_setting_refused: line o2-uart: {refused_text(pty_path, named)}"
    )
    assert [r.setting for r in err.value.refused] == [n.split()[0] for n in named]

    # a driver on that line reads BAD with the same keyword, line and setting -- no exception
    reading = await LuminOx(line, clock=clock).read_o2_pct()
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith(
        f"line_setting_refused: line o2-uart: {refused_text(pty_path, named)}"
    )
    assert "next attempt in" in reading.reason
    clock.advance(1.0)  # past the reconnect delay: tried again, refused again
    assert (await LuminOx(line, clock=clock).read_o2_pct()).keyword == "line_setting_refused"
    assert line.state().failed_attempts == 2
    await line.close()


@pytest.mark.parametrize(("kwargs", "named"), REFUSED, ids=IDS)
async def test_modbus_rtu_bus_names_the_refused_setting(
    clock: ManualClock, link: StaticPlantLink, kwargs: dict[str, object], named: list[str]
) -> None:
    async with PtyNullModem() as (server_end, client_end):
        bus = ModbusBusSim([Pt100Sim(link)], serial_port=server_end)
        await bus.start()
        settings = ModbusRtuSettings.model_validate(
            {"port": client_end, "baudrate": 9600, "timeout_s": 0.2, **kwargs}
        )
        hub = ModbusHub(settings, clock=clock, name="rs485-local")
        try:
            with pytest.raises(LineSettingRefusedError) as err:
                await hub.connect()
            assert err.value.reason == (
                f"line_setting_refused: bus rs485-local: {refused_text(client_end, named)}"
            )
            reading = await Pt100Transmitter(hub, clock=clock).read_temp_c()
            assert reading.quality is Quality.BAD
            assert reading.keyword == "line_setting_refused"
            assert f"bus rs485-local: {named[0]} refused by {client_end}" in reading.reason
            # the same port with the settings it can do works: the refusal was the setting
            good = ModbusHub(
                settings.model_copy(update={"parity": "N", "bytesize": 8}), clock=clock
            )
            await good.connect()
            assert (await Pt100Transmitter(good, clock=clock).read_temp_c()).value == 37.0
            await good.close()
        finally:
            await hub.close()
            await bus.stop()


def test_read_back_finds_a_setting_a_pty_dropped_silently(pty_path: str) -> None:
    """On a fresh pty other flags change too, so tcsetattr succeeds and parity is just lost."""
    port = serial.Serial(pty_path, parity="E")
    try:
        assert port.fd is not None
        refused = unapplied_settings(port.fd, SerialLineSettings(port=pty_path, parity="E"))
    finally:
        port.close()
    assert refused == [RefusedSetting("parity", "E", "the port keeps 'N'", silently=True)]
    assert refused[0].describe(pty_path) == (
        f"parity 'E' not applied by {pty_path} (the port keeps 'N')"
    )


# ------------------------------------------------------------------ ports that do not open
def _open_cases(tmp_path: Path) -> list[tuple[str, str, str]]:
    regular = tmp_path / "not-a-tty"
    regular.write_text("")
    return [
        ("/dev/null", "not_a_serial_port", "/dev/null is not a serial port (termios: "),
        (str(regular), "not_a_serial_port", f"{regular} is not a serial port (termios: "),
        (str(tmp_path / "ttyUSB9"), "port_not_found", f"{tmp_path / 'ttyUSB9'} does not exist"),
    ]


async def test_serial_paths_that_do_not_open(tmp_path: Path, clock: ManualClock) -> None:
    for port, keyword, text in _open_cases(tmp_path):
        line = SerialLine(SerialLineSettings(port=port), clock=clock, name="o2-uart")
        with pytest.raises(OpenFailedError) as err:
            await line.open()
        assert err.value.keyword == keyword
        assert err.value.message.startswith(f"line o2-uart: {text}"), err.value.reason
        reading = await LuminOx(line, clock=clock).read_o2_pct()
        assert (reading.keyword, reading.quality) == (keyword, Quality.BAD)
        assert "line o2-uart" in reading.reason

        hub = ModbusHub(ModbusRtuSettings(port=port), clock=clock, name="rs485-local")
        with pytest.raises(OpenFailedError) as err:
            await hub.connect()
        assert err.value.keyword == keyword
        assert err.value.message.startswith(f"bus rs485-local: {text}"), err.value.reason
        await hub.close()
        await line.close()


async def test_a_port_locked_by_another_program_is_busy(pty_path: str) -> None:
    holder = os.open(pty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = SerialLine(SerialLineSettings(port=pty_path), name="o2-uart")
        with pytest.raises(OpenFailedError) as err:
            await line.open()
        assert err.value.keyword == "port_busy"
        assert f"line o2-uart: {pty_path} is in use by another program" in err.value.reason
        hub = ModbusHub(ModbusRtuSettings(port=pty_path), name="rs485-local")
        with pytest.raises(OpenFailedError) as err:
            await hub.connect()
        assert err.value.keyword == "port_busy"
        await hub.close()
        await line.close()
    finally:
        os.close(holder)


def test_permission_denied_is_named() -> None:
    """As pyserial raises it (the tests run as root, where no device refuses access)."""
    denied = OSError(errno.EACCES, "Permission denied")
    try:
        raise serial.SerialException(errno.EACCES, "could not open port /dev/ttyUSB0") from denied
    except serial.SerialException as exc:
        error = serial_open_error(exc, "line o2-uart", "/dev/ttyUSB0")
    assert error.keyword == "permission_denied"
    assert error.message.startswith("line o2-uart: no permission to open /dev/ttyUSB0")


async def test_tcp_endpoints_that_do_not_connect(clock: ManualClock) -> None:
    dead = free_port()
    cases: list[tuple[ModbusHub | SerialLine, str, str]] = [
        (
            ModbusHub(ModbusTcpSettings(host="127.0.0.1", port=dead), clock=clock, name="tcp"),
            "connection_refused",
            f"bus tcp: nothing listens on 127.0.0.1:{dead}",
        ),
        (
            ModbusHub(ModbusRtuSettings(port=f"socket://127.0.0.1:{dead}"), name="gw"),
            "connection_refused",
            f"bus gw: nothing listens on 127.0.0.1:{dead}",
        ),
        (
            SerialLine(SerialLineSettings(port=f"socket://127.0.0.1:{dead}"), name="co2"),
            "connection_refused",
            f"line co2: nothing listens on 127.0.0.1:{dead}",
        ),
        (
            ModbusHub(ModbusTcpSettings(host="nonexistent.invalid"), name="plant"),
            "host_not_found",
            "bus plant: host 'nonexistent.invalid' not found",
        ),
        (
            SerialLine(SerialLineSettings(port="socket://nonexistent.invalid:4001"), name="x"),
            "host_not_found",
            "line x: host 'nonexistent.invalid' not found",
        ),
    ]
    for transport, keyword, text in cases:
        with pytest.raises(OpenFailedError) as err:
            await (transport.connect() if isinstance(transport, ModbusHub) else transport.open())
        assert err.value.keyword == keyword
        assert err.value.message.startswith(text), err.value.reason
        await transport.close()


# ------------------------------------------------------------------ errors on an open transport
MODBUS_STACK_ERRORS = [
    (ConnectionException("Not connected"), "disconnected"),
    (ModbusIOException("No response received after 1 retries"), "timeout"),
    (ParameterException("bad count"), "protocol_error"),
    (ModbusException("odd frame"), "protocol_error"),
    (TimeoutError(), "timeout"),
    (OSError(errno.EIO, "Input/output error"), "disconnected"),
    (serial.SerialException("returned no data"), "disconnected"),
    (termios.error(errno.EIO, "Input/output error"), "disconnected"),
    (ValueError("unpack requires a buffer of 4 bytes"), "protocol_error"),
    (RuntimeError("something nobody expected"), "internal_error"),
]


@pytest.mark.parametrize(
    ("exc", "keyword"), MODBUS_STACK_ERRORS, ids=[type(e).__name__ for e, _ in MODBUS_STACK_ERRORS]
)
async def test_every_modbus_stack_exception_becomes_a_bad_reading(
    modbus: ModbusFactory,
    link: StaticPlantLink,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    keyword: str,
) -> None:
    _, hub = await modbus([GmpSim(link)], framing="rtu")
    gmp = VaisalaGMP25x(hub, clock=clock, name="co2-gmp251")
    assert (await gmp.read_co2_pct()).quality is Quality.GOOD

    async def fail(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(hub._client, "read_holding_registers", fail)
    reading = await gmp.read_co2_pct()
    assert reading.quality is Quality.BAD
    assert reading.keyword == keyword, reading.reason
    assert reading.keyword in REASON_KEYWORDS
    assert hub.label in reading.reason  # names the bus


SERIAL_STACK_ERRORS = [
    (OSError(errno.EIO, "Input/output error"), "disconnected"),
    (serial.SerialException("write failed"), "disconnected"),
    (termios.error(errno.EIO, "Input/output error"), "disconnected"),
    (RuntimeError("something nobody expected"), "internal_error"),
]


@pytest.mark.parametrize(
    ("exc", "keyword"), SERIAL_STACK_ERRORS, ids=[type(e).__name__ for e, _ in SERIAL_STACK_ERRORS]
)
async def test_every_serial_stack_exception_becomes_a_bad_reading(
    ascii_line: AsciiFactory,
    link: StaticPlantLink,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    exc: Exception,
    keyword: str,
) -> None:
    _, line = await ascii_line([LuminOxSim(link)], transport="pty")
    sensor = LuminOx(line, clock=clock, name="o2-luminox")
    assert (await sensor.read_o2_pct()).quality is Quality.GOOD

    def fail(command: str) -> None:
        raise exc

    monkeypatch.setattr(line, "_write", fail)
    reading = await sensor.read_o2_pct()
    assert reading.quality is Quality.BAD
    assert reading.keyword == keyword, reading.reason
    assert line.label in reading.reason


# ------------------------------------------------------------------ start-up
Buses = dict[str, ModbusTcpSettings | ModbusRtuSettings]


def _dead_site(tmp_path: Path) -> tuple[Buses, dict[str, SerialLineSettings], dict[str, str]]:
    """Three buses and three lines nobody answers, and the keyword each must report."""
    buses: Buses = {
        "plant-tcp": ModbusTcpSettings(host="127.0.0.1", port=free_port()),
        "rs485-gw": ModbusRtuSettings(port=f"socket://127.0.0.1:{free_port()}"),
        "rs485-local": ModbusRtuSettings(port=str(tmp_path / "ttyRS485")),
    }
    lines = {
        "o2-uart": SerialLineSettings(port=str(tmp_path / "ttyO2")),
        "co2-uart": SerialLineSettings(port=f"socket://127.0.0.1:{free_port()}"),
        "null-uart": SerialLineSettings(port="/dev/null"),
    }
    expected = {
        "bus plant-tcp": "connection_refused",
        "bus rs485-gw": "connection_refused",
        "bus rs485-local": "port_not_found",
        "line o2-uart": "port_not_found",
        "line co2-uart": "connection_refused",
        "line null-uart": "not_a_serial_port",
    }
    return buses, lines, expected


async def test_six_dead_transports_open_in_about_the_time_of_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    buses, lines, expected = _dead_site(tmp_path)
    wait_s = 0.6
    singles: list[float] = []
    for name in [*buses, *lines]:
        alone = Transports.create(
            {name: buses[name]} if name in buses else {},
            {name: lines[name]} if name in lines else {},
        )
        started = time.perf_counter()
        assert await alone.open(wait_s=wait_s) == [name]
        singles.append(time.perf_counter() - started)
        await alone.close()

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    everything = Transports.create(buses, lines)
    started = time.perf_counter()
    failed = await everything.open(wait_s=wait_s)
    together = time.perf_counter() - started
    try:
        assert sorted(failed) == sorted([*buses, *lines])
        # concurrent: about one transport's time, not the sum of six
        assert together < 2 * max(singles), (together, singles)
        assert sum(singles) > 2 * together, (together, singles)

        states = everything.states()
        assert {label: s.keyword for label, s in states.items()} == expected
        for label, state in states.items():
            assert not state.connected
            assert state.failed_attempts > 1  # retried during the wait
            assert state.first_failure is not None
            assert state.first_failure.message.startswith(label)
            # start-up retries did not push the reconnect delay to its maximum (30 s)
            assert state.next_attempt_s <= 0.5 * 1.1, state
            assert state.describe().startswith(f"not open: {expected[label]}: {label}")

        # one warning per transport, naming it and the cause; no anonymous library noise
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert sorted(r.getMessage().split(":")[0] for r in warnings) == sorted(expected)
        for record in warnings:
            label = record.getMessage().split(":")[0]
            assert expected[label] in record.getMessage()
        assert not [r for r in caplog.records if r.name.startswith(("pymodbus", "stamina"))]
        assert all(
            re.match(r"(bus|line) \S+: ", r.getMessage())
            for r in caplog.records
            if r.name.startswith("drivers.transport")
        )
    finally:
        await everything.close()


async def test_startup_retries_are_separate_from_the_reconnect_backoff(
    clock: ManualClock,
) -> None:
    settings = ModbusTcpSettings(
        host="127.0.0.1", port=free_port(), reconnect_initial_s=0.5, reconnect_max_s=30.0
    )
    hub = ModbusHub(settings, clock=clock, name="plant-tcp")
    with pytest.raises(OpenFailedError):
        await hub.connect(wait_s=0.5)
    state = hub.state()
    assert state.failed_attempts >= 3
    assert 0.5 <= state.next_attempt_s <= 0.55  # the initial delay, not the maximum
    failures = hub.stats.connect_failures

    sensor = Pt100Transmitter(hub, clock=clock, name="temp-pt100")
    waiting = await sensor.read_temp_c()  # within the delay: no attempt, the cause is kept
    assert waiting.keyword == "connection_refused"
    assert "bus plant-tcp: nothing listens on" in waiting.reason
    assert hub.stats.connect_failures == failures

    clock.advance(0.6)
    assert (await sensor.read_temp_c()).keyword == "connection_refused"
    assert hub.stats.connect_failures == failures + 1
    assert 1.0 <= hub.state().next_attempt_s <= 1.1  # run-time back-off starts doubling here
    await hub.close()


async def test_startup_success_after_failures_clears_the_cause(link: StaticPlantLink) -> None:
    bus = ModbusBusSim([Pt100Sim(link)])
    await bus.start()
    port = bus.port
    await bus.stop()

    async def start_later() -> None:
        await asyncio.sleep(0.15)
        await bus.start()

    hub = ModbusHub(ModbusTcpSettings(host="127.0.0.1", port=port, timeout_s=0.2), name="t")
    try:
        await asyncio.gather(hub.connect(wait_s=3.0), start_later())
        state = hub.state()
        assert state.connected
        assert state.describe() == "open"
        assert (state.failed_attempts, state.latest_failure) == (0, None)
    finally:
        await hub.close()
        await bus.stop()


# ------------------------------------------------------------------ stream-mode first read
async def test_stream_first_read_waits_for_the_first_line(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    period_s = 0.3
    _, line = await ascii_line([LuminOxSim(link)], stream_interval_s=period_s)
    sensor = LuminOx(line, mode="stream", clock=clock, stream_period_s=period_s)
    await sensor.start()
    started = time.perf_counter()
    reading = await sensor.read_o2_pct()
    waited = time.perf_counter() - started
    assert reading.quality is Quality.GOOD, reading.reason
    assert reading.value == pytest.approx(20.9)
    assert waited < first_line_wait_s(period_s)
    await sensor.close()

    _, line2 = await ascii_line([GssSim(link, multiplier=10)], stream_interval_s=period_s)
    gss = GssCO2(line2, mode="stream", clock=clock, stream_period_s=period_s)
    assert (await gss.read_co2_pct()).quality is Quality.GOOD  # start() inside, then waits
    await gss.close()


async def test_a_silent_stream_is_bad_after_one_period_and_margin(
    ascii_line: AsciiFactory, link: StaticPlantLink, clock: ManualClock
) -> None:
    class Quiet(LuminOxSim):
        def stream_lines(self) -> list[str]:
            return []  # answers commands, never streams

    period_s = 0.2
    _, line = await ascii_line([Quiet(link)], stream_interval_s=period_s)
    sensor = LuminOx(line, mode="stream", clock=clock, stream_period_s=period_s)
    await sensor.start()
    started = time.perf_counter()
    reading = await sensor.read_o2_pct()
    waited = time.perf_counter() - started
    assert reading.quality is Quality.BAD
    assert reading.reason.startswith(f"timeout: no stream line from luminox on {line.label}")
    assert waited >= period_s
    started = time.perf_counter()
    assert (await sensor.read_o2_pct()).keyword == "timeout"  # no second wait
    assert time.perf_counter() - started < period_s
    await sensor.close()


# ------------------------------------------------------------------ the CLI
def test_devices_read_shows_why_a_transport_is_not_open(tmp_path: Path) -> None:
    """The site's simulators are not running: every row says why, naming its bus or line."""
    site = site_file(tmp_path)
    result = hypoxia("devices", "read", str(site), "--json", "--wait-s", "0.5")
    assert result.returncode == 3, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert rows
    by_device = {row["device"]: row for row in rows}
    o2 = by_device["o2-luminox"]
    assert o2["reason"].startswith(
        f"port_not_found: line o2-uart: {tmp_path / 'dev' / 'ttyO2'} does not exist"
    )
    assert o2["transport"] == "line o2-uart"
    assert o2["transport_open"] is False
    assert o2["transport_state"].startswith("not open: port_not_found: line o2-uart: ")
    gmp = by_device["co2-gmp251"]
    assert gmp["reason"].startswith("connection_refused: bus rs485-gw: nothing listens on")
    for row in rows:
        keyword = row["reason"].split(":")[0]
        assert keyword in {"port_not_found", "connection_refused"}, row
        assert row["transport"] in row["reason"], row  # every reason names its bus or line
    # one start-up warning per transport, naming it and the cause; no stamina noise
    warned = re.findall(r"^WARNING ((?:bus|line) [\w-]+): not open after", result.stderr, re.M)
    assert sorted(warned) == sorted({row["transport"] for row in rows})
    assert "retry_scheduled" not in result.stderr
