"""Clock, quality helpers, backoff, settings, capability protocols and layering."""

from __future__ import annotations

import ast
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

import drivers
from common.backoff import Backoff
from common.clock import Clock, ManualClock, SystemClock
from drivers.alicat import AlicatModbus, AlicatSerial
from drivers.base import CO2Sensor, FlowController, O2Sensor, TemperatureSensor
from drivers.errors import (
    REASON_KEYWORDS,
    DeviceTimeoutError,
    ModbusDeviceError,
    WriteVerifyError,
)
from drivers.gss import GssCO2
from drivers.luminox import LuminOx
from drivers.pt100 import Pt100Transmitter
from drivers.quality import Stamper, ValidRange, aged
from drivers.reading import Quality
from drivers.transport.modbus import ModbusHub
from drivers.transport.serial_line import SerialLine
from drivers.transport.settings import (
    ModbusBusSettings,
    ModbusRtuSettings,
    ModbusTcpSettings,
    SerialLineSettings,
)
from drivers.vaisala import VaisalaGMP25x, VaisalaHMP


def test_clocks() -> None:
    system: Clock = SystemClock()
    assert system.utc().tzinfo is UTC
    assert system.monotonic() <= system.monotonic()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    manual = ManualClock(100.0, start)
    manual.advance(90.5)
    assert manual.monotonic() == 190.5
    assert manual.utc() == start + timedelta(seconds=90.5)
    with pytest.raises(ValueError, match="backwards"):
        manual.advance(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(0.0, datetime(2026, 1, 1))


def test_stamper_and_aged() -> None:
    clock = ManualClock()
    stamper = Stamper(clock)
    good = stamper.value(20.9, "%", ValidRange(0, 25))
    assert good.quality is Quality.GOOD
    assert good.trusted
    assert good.monotonic_s == clock.monotonic()
    assert stamper.value(30, "%", ValidRange(0, 25)).reason == "out_of_range: 30 % not in [0, 25]"
    nan = stamper.value(math.nan, "%")
    assert (nan.quality, nan.reason) == (Quality.BAD, "nan: device reports no valid value")
    assert stamper.failed("%", DeviceTimeoutError("no reply")).reason == "timeout: no reply"
    clock.advance(2.0)
    assert aged(good, clock.monotonic(), 2.0) is good
    stale = aged(good, clock.monotonic() + 0.5, 2.0)
    assert (stale.quality, stale.value, stale.reason) == (
        Quality.STALE,
        20.9,
        "stale: 2.5 s old (max 2 s)",
    )
    assert aged(nan, clock.monotonic() + 99, 1.0) is nan
    with pytest.raises(ValueError, match="low"):
        ValidRange(2, 1)


def test_error_reasons() -> None:
    assert ModbusDeviceError(2, "unit 1").reason == (
        "exception_response: modbus exception 2 illegal data address (unit 1)"
    )
    err = WriteVerifyError("mfc-n2", "setpoint_lpm", 1.0, 0.0)
    assert err.reason == "write_verify_failed: mfc-n2: setpoint_lpm requested 1.0, read back 0.0"
    assert err.keyword in REASON_KEYWORDS


def test_backoff_is_a_deadline_not_a_sleep() -> None:
    clock = ManualClock()
    backoff = Backoff(clock, initial_s=1.0, max_s=4.0, threshold=2)
    assert backoff.ready()
    assert backoff.failed() == 0.0  # below threshold: retry immediately
    assert backoff.ready()
    first = backoff.failed()
    assert 1.0 <= first <= 1.1
    assert not backoff.ready()
    clock.advance(first)
    assert backoff.ready()
    assert 2.0 <= backoff.failed() <= 2.2
    clock.advance(3)
    assert 4.0 <= backoff.failed() <= 4.4  # capped (plus jitter)
    backoff.succeeded()
    assert backoff.ready()
    assert backoff.remaining_s() == 0.0
    with pytest.raises(ValueError, match="threshold"):
        Backoff(clock, 1.0, 0.5)


def test_settings_are_strict_plain_data() -> None:
    adapter: TypeAdapter[ModbusTcpSettings | ModbusRtuSettings] = TypeAdapter(ModbusBusSettings)
    tcp = adapter.validate_python({"kind": "tcp", "host": "10.0.0.5"})
    assert isinstance(tcp, ModbusTcpSettings)
    assert (tcp.port, tcp.timeout_s, tcp.retries) == (502, 0.3, 1)
    rtu = adapter.validate_python({"kind": "rtu", "port": "/dev/ttyUSB0", "stopbits": 2})
    assert isinstance(rtu, ModbusRtuSettings)
    with pytest.raises(ValidationError, match="extra_forbidden"):
        adapter.validate_python({"kind": "tcp", "host": "x", "slave": 1})
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        ModbusTcpSettings(host="x", timeout_s=30)
    with pytest.raises(ValidationError, match="stopbits"):
        ModbusRtuSettings.model_validate({"port": "/dev/ttyUSB0", "stopbits": 3})
    assert SerialLineSettings(port="socket://127.0.0.1:1").eol == "\r\n"


async def test_drivers_satisfy_capability_protocols() -> None:
    hub = ModbusHub(ModbusTcpSettings(host="127.0.0.1"))
    line = SerialLine(SerialLineSettings(port="socket://127.0.0.1:1"))
    assert isinstance(LuminOx(line), O2Sensor)
    assert isinstance(GssCO2(line), CO2Sensor)
    assert isinstance(VaisalaGMP25x(hub), CO2Sensor)
    assert isinstance(VaisalaGMP25x(hub), TemperatureSensor)
    assert isinstance(VaisalaHMP(hub), TemperatureSensor)
    assert isinstance(Pt100Transmitter(hub), TemperatureSensor)
    assert isinstance(AlicatSerial(line, full_scale_lpm=1.0), FlowController)
    assert isinstance(AlicatModbus(hub, full_scale_lpm=1.0), FlowController)


def test_drivers_never_import_simulators() -> None:
    root = Path(drivers.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "simulators"]
    assert offenders == []


def test_drivers_do_not_read_the_wall_clock() -> None:
    root = Path(drivers.__file__).parent
    allowed = {"clock.py"}
    offenders = [
        p.name
        for p in root.rglob("*.py")
        if p.name not in allowed
        and any(s in p.read_text() for s in ("time.monotonic", "time.time(", "datetime.now"))
    ]
    assert offenders == []
