"""Site files: bad ones fail naming the field; the example serves and reads over every transport;
the audit trail's tampering shows through the CLI."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.service.audit import AuditTrail
from tests.cli import hypoxia
from tests.service_kit import ROOT, site_file

SIM = (ROOT / "examples/sites/sim.toml").read_text()

BAD_SITES = {
    "unknown driver": (
        'name = "mfc-n2"\ndriver = "alicat_modbus"',
        'name = "mfc-n2"\ndriver = "brooks_sla"',
        "reactors[0].devices[5]",
        "does not match any of the expected tags",
    ),
    "two devices with one unit id on one bus": (
        'unit = 241\nrole = "temperature_secondary"',
        'unit = 240\nrole = "temperature_secondary"',
        "reactors[0].devices[4].unit",
        "both use unit id 240 on bus 'rs485-gw'",
    ),
    "a role missing": (
        'role = "co2_mixer"',
        'role = "o2_mixer"',
        "reactors[0]",
        "role(s) co2_mixer missing",
    ),
    "unknown word order": (
        'dtype = "uint16", unit = "W"',
        'dtype = "uint16", word_order = "middle", unit = "W"',
        "reactors[0].devices[9].register_map.map.points[0].word_order",
        "'big' or 'little'",
    ),
    "undefined bus": (
        'bus = "plant-tcp"\nunit = 1',
        'bus = "plant-tcp-2"\nunit = 1',
        "reactors[0].devices[5].bus",
        "'plant-tcp-2' is not defined",
    ),
    "out-of-range unit id": (
        "unit = 240\nmodel",
        "unit = 300\nmodel",
        "unit",
        "less than or equal to 247",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SITES))
def test_bad_site_file_names_the_field(case: str, tmp_path: Path) -> None:
    old, new, field, allowed = BAD_SITES[case]
    assert old in SIM, old
    path = tmp_path / "site.toml"
    path.write_text(SIM.replace(old, new, 1))
    result = hypoxia("devices", "read", str(path))
    assert result.returncode == 2, result.stdout
    message = " ".join(result.stderr.split())
    assert str(path) in message
    assert field in message
    assert allowed in message


def test_example_site_is_valid() -> None:
    result = hypoxia("devices", "read", "--help")
    assert result.returncode == 0
    from controller.service.site import load_site

    site = load_site(ROOT / "examples/sites/sim.toml")
    drivers = {d.driver for r in site.reactors for d in r.devices}
    assert drivers == {
        "luminox",
        "vaisala_gmp25x",
        "gss_co2",
        "pt100",
        "vaisala_hmp",
        "alicat_modbus",
        "alicat_serial",
        "relay_board",
        "register_map",
    }


def test_devices_read_gets_good_readings_over_every_transport(tmp_path: Path) -> None:
    site = site_file(tmp_path)
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypoxia",
            "simulate-devices",
            str(site),
            "--vessel",
            "workstation-100l",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        assert sim.stdout is not None
        listing = []
        while time.monotonic() < deadline:
            line = sim.stdout.readline()
            listing.append(line)
            if line.strip() == "ready":
                break
        text = "".join(listing)
        for transport in (
            "modbus rtu over tcp",
            "modbus rtu on pty",
            "modbus socket",
            "ascii on pty",
            "ascii on 127.0.0.1",
        ):
            assert transport in text, text
        result = hypoxia("devices", "read", str(site), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = json.loads(result.stdout)
        assert {row["device"] for row in rows} == {
            "o2-luminox",
            "co2-gmp251",
            "co2-sprintir",
            "temp-pt100",
            "temp-hmp",
            "mfc-n2",
            "mfc-air",
            "mfc-co2",
            "relays",
            "heater",
        }
        assert all(row["quality"] == "good" for row in rows), rows
        o2 = next(r for r in rows if r["device"] == "o2-luminox")
        assert o2["value"] == pytest.approx(20.9, abs=0.2)
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=10)


def test_audit_verify_cli_detects_an_edited_row(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite"
    trail = AuditTrail.open(db)
    from datetime import UTC, datetime

    for i in range(3):
        trail.append(
            datetime(2026, 11, 27, 9, i, tzinfo=UTC),
            "erik",
            "engineer",
            "set_setpoint",
            "ws1/run",
            2.0,
            2.0 + i / 10,
            "trim",
        )
    trail.conn.close()
    ok = hypoxia("audit", "verify", str(db))
    assert ok.returncode == 0
    assert "3 records, chain intact" in ok.stdout
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET new_value = '9.9' WHERE seq = 2")
    conn.commit()
    conn.close()
    bad = hypoxia("audit", "verify", str(db))
    assert bad.returncode == 1
    assert "TAMPERED" in bad.stdout
    assert "record 2" in bad.stdout
