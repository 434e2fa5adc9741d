"""Test kit for sites of many reactors: a generated simulated site, whole or split into partitions.

Each reactor has five Modbus TCP instruments served by ``hypoxia simulate-devices``: O2 (a
register-map probe), CO2 (a Vaisala GMP251), temperature (a PT100 module) and two Alicat MFCs (N2
and CO2); the vessel model has no air line, so no air MFC. ``per_bus`` reactors share one Modbus
TCP port (a gateway), each on its own unit ids. Bus timeouts are the longest the cycle's time
budget allows (controller/service/budget.py), so the site loads whatever ``per_bus`` is.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from controller.service.budget import CYCLE_DEADLINE_SHARE
from tests.service_kit import ROOT, air_hold, free_port

TRANSACTIONS_PER_REACTOR = 12
"""Worst case per cycle (budget.py): O2 read 1, CO2 read 2 + O2 pushed to it 2, temperature 1,
two mixers 3 each (read, verified write)."""
UNITS_PER_REACTOR = 5

AIR_RECIPE = air_hold("air hold (scale tests)", 1.0, co2_pct=0.5)


def workstation_process(air_max_lpm: float) -> str:
    """The ``[reactors.process]`` table of a 100 L workstation (the simulators' workstation-100l)
    with ``air_max_lpm`` of air (0: no air line)."""
    return f"""[reactors.process]
volume_l = 100.0
leak_lpm = 0.1
n2_max_lpm = 20.0
air_max_lpm = {air_max_lpm}
o2_max_lpm = 0.0
co2_max_lpm = 2.0
transport_delay_s = 5.0
o2_sensor_t63_s = 8.7
co2_sensor_t63_s = 30.0
temp_sensor_t63_s = 20.0
heat_capacity_j_per_k = 60000.0
ua_w_per_k = 8.0
heater_max_w = 400.0
room_temp_c = 21.0
control_period_s = 1.0
"""


def device_tables(bus: str, first_unit: int, devices: Sequence[tuple[str, str, str]]) -> str:
    """``[[reactors.devices]]`` tables on ``bus``, unit ids from ``first_unit`` up, one for each
    ``(name, driver, body)``; ``body`` holds the driver's own keys (and its sub-tables)."""
    return "\n".join(
        f'[[reactors.devices]]\nname = "{name}"\ndriver = "{driver}"\nbus = "{bus}"\n'
        f"unit = {first_unit + k}\n{body}\n"
        for k, (name, driver, body) in enumerate(devices)
    )


_PROCESS = "\n" + workstation_process(0.0)

_O2_MAP = (
    'map.points = [{ name = "o2_pct", kind = "input", address = 0, dtype = "uint16", '
    'scale = 0.01, unit = "%", valid_min = 0, valid_max = 100 }]'
)


@dataclass(frozen=True, slots=True)
class ScaleSite:
    """A generated site: its reactor ids and the port of each gateway (bus)."""

    ids: list[str]
    per_bus: int
    bus_ports: list[int]

    @classmethod
    def make(cls, n_reactors: int, per_bus: int = 10) -> ScaleSite:
        """``n_reactors`` reactors ``r001``…, ``per_bus`` to a gateway, on free ports."""
        ids = [f"r{i + 1:03d}" for i in range(n_reactors)]
        buses = (n_reactors + per_bus - 1) // per_bus
        return cls(ids, per_bus, [free_port() for _ in range(buses)])

    def bus_of(self, index: int) -> int:
        """The gateway of the reactor at ``index``."""
        return index // self.per_bus

    def write(
        self,
        path: Path,
        state_dir: Path,
        *,
        ids: Sequence[str] | None = None,
        broker: str | None = None,
        extra: str = "",
    ) -> Path:
        """Write the site file with ``ids`` (default: every reactor) to ``path``.

        ``broker`` is a ``[broker]`` table body (default: the embedded broker on a free port);
        ``extra`` is added at the top level before any table (``partition = "a"``, say) — tables
        such as ``[recorder]`` may follow it too.
        """
        chosen = list(ids or self.ids)
        share = CYCLE_DEADLINE_SHARE / (TRANSACTIONS_PER_REACTOR * self.per_bus)
        timeout_s = math.floor(share * 1e4) / 1e4
        lines = ['site = "scale"', "simulated = true", f'state_dir = "{state_dir}"', ""]
        used = sorted({self.bus_of(self.ids.index(r)) for r in chosen})
        broker_body = broker if broker is not None else f"embedded = true\nport = {free_port()}"
        lines += [f"[broker]\n{broker_body}\n"]
        for b in used:
            lines += [
                f"[buses.gw{b}]",
                'kind = "tcp"',
                'host = "127.0.0.1"',
                f"port = {self.bus_ports[b]}",
                f"timeout_s = {timeout_s}",
                "retries = 0",
                "",
            ]
        for rid in chosen:
            lines.append(self._reactor(rid))
        lines.append('[[users]]\nname = "erik"\nrole = "engineer"\n')
        text = "\n".join(lines)
        if extra:
            text = text.replace("[broker]", f"{extra}\n\n[broker]", 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def _reactor(self, rid: str) -> str:
        index = self.ids.index(rid)
        bus = f"gw{self.bus_of(index)}"
        unit = (index % self.per_bus) * UNITS_PER_REACTOR + 1
        devices = [
            (f"{rid}-o2", "register_map", f'roles = {{ o2 = "o2_pct" }}\n{_O2_MAP}'),
            (f"{rid}-co2", "vaisala_gmp25x", 'model = "GMP251"\nrole = "co2"'),
            (f"{rid}-temp", "pt100", 'role = "temperature"'),
            (f"{rid}-mfc-n2", "alicat_modbus", 'role = "n2_mixer"\nfull_scale_lpm = 20.0'),
            (f"{rid}-mfc-co2", "alicat_modbus", 'role = "co2_mixer"\nfull_scale_lpm = 2.0'),
        ]
        return f'[[reactors]]\nid = "{rid}"\n{_PROCESS}\n' + device_tables(bus, unit, devices)


def hypoxia(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """A ``hypoxia`` command in its own process, its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hypoxia", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for_text(proc: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float) -> None:
    """Wait until ``text`` appears in ``log``; fail with the log if the process ends first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    msg = f"'{text}' not seen in {log}:\n{log.read_text(errors='replace')[-4000:]}"
    raise AssertionError(msg)


def interrupt(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGINT (as Ctrl-C), then wait; SIGKILL after ``timeout_s``. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@contextmanager
def simulated_devices(site: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``hypoxia simulate-devices`` serving every instrument of ``site`` until the block ends."""
    proc = hypoxia("simulate-devices", str(site), "--vessel", "workstation-100l", log=log)
    try:
        wait_for_text(proc, log, "ready", 60)
        yield proc
    finally:
        interrupt(proc)
