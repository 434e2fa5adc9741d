"""Sites too big for the wire or the machine fail at start-up with a clear message (``FILE: FIELD:
problem; allowed: …``), never with a traceback (controller/service/limits.py, budget.py)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.config_errors import ConfigError
from controller.service.limits import open_files_needed, port_problem, rtu_transaction_min_s
from controller.service.site import load_site
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from tests.scale_kit import ScaleSite
from tests.service_kit import ROOT


def _site(tmp_path: Path, scale: ScaleSite, state_dir: Path | None = None) -> Path:
    return scale.write(tmp_path / "site.toml", state_dir or tmp_path / "state")


def test_a_serial_rtu_bus_too_slow_for_its_transactions_is_refused(tmp_path: Path) -> None:
    path = _site(tmp_path, ScaleSite.make(4, per_bus=4))  # 48 transactions on one bus
    text = re.sub(
        r'kind = "tcp"\nhost = "127.0.0.1"\nport = \d+\n',
        'kind = "rtu"\nport = "/dev/ttyUSB0"\nbaudrate = 9600\n',
        path.read_text(),
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_site(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: buses.gw0.baudrate: 48 transactions per cycle")
    settings = ModbusRtuSettings(port="/dev/ttyUSB0", baudrate=9600)
    most = int(0.8 / rtu_transaction_min_s(settings))
    assert f"allowed: at most {most} transactions per cycle" in message
    # the same bus at 115200 baud carries them
    path.write_text(text.replace("baudrate = 9600", "baudrate = 115200"))
    assert len(load_site(path).reactors) == 4


def test_too_many_devices_on_one_gateway_or_unit_ids_past_247_are_refused(tmp_path: Path) -> None:
    path = _site(tmp_path, ScaleSite.make(20, per_bus=20))
    path.write_text(re.sub(r"timeout_s = [0-9.]+", "timeout_s = 0.05", path.read_text()))
    with pytest.raises(ConfigError, match=r"buses\.gw0\.timeout_s: 240 transactions per cycle"):
        load_site(path)
    path = _site(tmp_path, ScaleSite.make(50, per_bus=50))  # unit ids up to 250
    with pytest.raises(ConfigError, match=r"reactors\[49\]\.devices\[2\]\.pt100\.unit: got 248;"):
        load_site(path)


def test_a_control_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with pytest.raises(ConfigError, match=r"state_dir: .* too long for a Unix socket"):
        load_site(_site(tmp_path, ScaleSite.make(1, per_bus=1), deep))


def test_open_files_are_raised_to_what_the_site_needs_or_refused() -> None:
    gateways = [ModbusTcpSettings(host="gw", connections=4), ModbusTcpSettings(host="gw2")]
    assert open_files_needed(gateways, 3) == 128 + 4 + 1 + 3
    # in a child process: its limits are its own
    script = textwrap.dedent(
        """
        import resource
        from common.config_errors import ConfigError
        from controller.service.limits import ensure_open_files
        resource.setrlimit(resource.RLIMIT_NOFILE, (150, 400))
        print("raised to", ensure_open_files(300), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        try:
            ensure_open_files(1000, "site.toml")
        except ConfigError as exc:
            print(exc)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    lines = run.stdout.splitlines()
    assert lines[0] == "raised to 300 300"
    assert lines[1].startswith("site.toml: buses: the site needs about 1000 open files")
    assert "at most 400 (ulimit -n, hard limit)" in lines[1]
    assert "LimitNOFILE=1000" in lines[1]


def test_run_refuses_an_embedded_broker_port_in_use_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_problem("127.0.0.1", port) is not None
        scale = ScaleSite.make(1, per_bus=1)
        site = scale.write(
            tmp_path / "site.toml", tmp_path / "state", broker=f"embedded = true\nport = {port}"
        )
        recipe = tmp_path / "recipe.toml"
        recipe.write_text("name = 'x'\n[[phases]]\nname = 'a'\nuntil = 'time'\nduration_h = 1\n")
        run = subprocess.run(
            [sys.executable, "-m", "hypoxia", "run", str(site), str(recipe)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    output = run.stdout + run.stderr
    assert run.returncode == 2, output
    assert "Traceback" not in output
    assert f"broker.port: cannot listen on 127.0.0.1:{port}: already in use" in " ".join(
        output.split()
    )
