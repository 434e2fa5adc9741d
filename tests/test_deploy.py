"""Installing a site as services (deploy/, docs/deploy.md).

The systemd units are checked by ``systemd-analyze verify`` (Debian's systemd package, installed by
scripts/test), with their ``ExecStart`` pointed at this checkout's ``hypoxia`` because verify
insists that the executable exists; the compose file is validated against the Compose
specification's JSON schema as vendored by the check-jsonschema package
(``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, from
github.com/compose-spec/compose-spec, ``schema/compose-spec.json``); ``docker compose config``
would need a Docker engine, which CI does not have.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from controller.service.site import load_site
from controller.service.watchdog import EXIT_LOOP_BLOCKED
from tests.service_kit import ROOT

DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
COMPOSE = DEPLOY / "compose.yaml"
UDEV = DEPLOY / "udev/99-hypoxia-serial.rules"
BY_ID_SITE = ROOT / "examples/sites/serial-by-id.toml"
DOC = ROOT / "docs/deploy.md"
INSTALLED_HYPOXIA = "/opt/hypoxia/.venv/bin/hypoxia"
STATE_DIR = "/var/lib/hypoxia"
COMMANDS = {
    "hypoxia-run@.service": " run /etc/hypoxia/%i.toml",
    "hypoxia-record@.service": " record /etc/hypoxia/%i.toml",
    "hypoxia-simulate@.service": " simulate-devices /etc/hypoxia/%i.toml",
}


def unit(path: Path) -> configparser.ConfigParser:
    """A unit file as sections of keys (systemd's syntax is INI-like enough for these files)."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(path.read_text())
    return parser


def compose() -> dict[str, Any]:
    """deploy/compose.yaml."""
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_three_units_are_there() -> None:
    """Controller, recorder and the demo's simulators, each a template instantiated per site."""
    assert {u.name for u in UNITS} == set(COMMANDS)
    for path in UNITS:
        exec_start = unit(path)["Service"]["ExecStart"]
        assert exec_start.startswith(INSTALLED_HYPOXIA + COMMANDS[path.name]), exec_start


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (scripts/test installs Debian's systemd package)",
)
@pytest.mark.parametrize("path", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verifies_every_unit(path: Path, tmp_path: Path) -> None:
    """``systemd-analyze verify`` on an instance of each template, with no warning at all."""
    hypoxia = Path(sys.executable).parent / "hypoxia"
    assert hypoxia.exists(), hypoxia
    for other in UNITS:  # the units name each other (After=, JoinsNamespaceOf=)
        text = other.read_text().replace(INSTALLED_HYPOXIA, str(hypoxia))
        (tmp_path / other.name).write_text(text)
    instance = tmp_path / path.name.replace("@.", "@sim.")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, output
    assert output == "", output  # unknown keys and bad values are warnings with status 0


@pytest.mark.parametrize("path", UNITS, ids=[u.name for u in UNITS])
def test_units_are_hardened_and_restart_on_failure(path: Path) -> None:
    """Own user, read-only system but the state dir, no privilege gain, restart with back-off."""
    parsed = unit(path)
    service, section = parsed["Service"], parsed["Unit"]
    assert service["User"] == "hypoxia"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert STATE_DIR in service["ReadWritePaths"].split()
    assert service["PrivateTmp"] == "yes"
    assert service["Restart"] == "on-failure"
    assert float(service["RestartSec"]) > 0
    assert int(section["StartLimitBurst"]) >= 1
    assert float(section["StartLimitIntervalSec"]) > float(service["RestartSec"])
    # no WatchdogSec: the service does not send sd_notify keep-alives
    assert "WatchdogSec" not in service
    assert service.get("Type") == "exec"


def test_the_controller_unit_restarts_a_blocked_event_loop() -> None:
    """The watchdog's exit status (70) is a failure the unit restarts, never a success."""
    service = unit(DEPLOY / "systemd/hypoxia-run@.service")["Service"]
    assert EXIT_LOOP_BLOCKED == 70
    prevented = service.get("RestartPreventExitStatus", "").split()
    success = service.get("SuccessExitStatus", "").split()
    assert str(EXIT_LOOP_BLOCKED) not in prevented + success
    assert service["SupplementaryGroups"] == "dialout"  # USB-serial adapters


def test_compose_validates_against_the_compose_specification() -> None:
    """deploy/compose.yaml against the Compose specification's JSON schema."""
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator(schema).iter_errors(compose())]
    assert errors == []
    # the schema catches a typo in a service key
    broken = compose()
    broken["services"]["grafana"]["volume"] = []
    assert list(validator(schema).iter_errors(broken))


def test_every_file_compose_mounts_is_in_the_repo() -> None:
    """Bind mounts and env files, relative to deploy/ as Compose resolves them."""
    doc = compose()
    named = set(doc.get("volumes", {}))
    sources: list[str] = []
    for service in doc["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            sources.append(source)
        sources += service.get("env_file", [])
    assert sources
    for source in sources:
        assert source.startswith("."), f"{source}: mount files of the repo, by relative path"
        assert (DEPLOY / source).resolve().exists(), source


def test_compose_runs_the_data_stack_with_the_repos_configuration() -> None:
    """Mosquitto with the example users and ACL, InfluxDB 1.x, Grafana provisioned, Telegraf."""
    services = compose()["services"]
    assert set(services) == {"mosquitto", "influxdb", "grafana", "telegraf"}
    mosquitto = services["mosquitto"]["volumes"]
    assert "../examples/mosquitto/passwd:/mosquitto/config/passwd:ro" in mosquitto
    assert "../examples/mosquitto/acl:/mosquitto/config/acl:ro" in mosquitto
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    assert "password_file /mosquitto/config/passwd" in conf
    assert "acl_file /mosquitto/config/acl" in conf
    assert "allow_anonymous false" in conf
    assert re.fullmatch(r"influxdb:1\.\d+", services["influxdb"]["image"])
    grafana = services["grafana"]
    assert "../dashboards/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    provider = yaml.safe_load(
        (ROOT / "dashboards/grafana/provisioning/dashboards/hypoxia.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"../dashboards/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert grafana["env_file"] == ["../dashboards/grafana/hypoxia.env"]
    assert grafana["environment"]["HYPOXIA_INFLUXDB_URL"] == "http://influxdb:8086"
    telegraf = services["telegraf"]
    assert (
        "../dashboards/telegraf/hypoxia.conf:/etc/telegraf/telegraf.conf:ro"
        in (telegraf["volumes"])
    )
    assert telegraf["environment"]["HYPOXIA_MQTT_SERVER"] == "tcp://mosquitto:1883"


def test_the_by_id_site_loads_and_names_stable_serial_ports() -> None:
    """The example real-hardware site: valid, by-id ports, state under the units' state dir."""
    site = load_site(BY_ID_SITE)
    ports = [bus.port for bus in site.buses.values() if bus.kind == "rtu"]
    ports += [line.port for line in site.lines.values()]
    assert ports
    assert all(str(p).startswith("/dev/serial/by-id/") for p in ports), ports
    assert str(site.state_dir).startswith(STATE_DIR + "/")
    assert not site.broker.embedded
    assert site.recorder.store.kind == "influxdb1"
    assert site.page.grafana_url == "http://127.0.0.1:3000"  # compose publishes Grafana there


def test_udev_rules_give_serial_adapters_to_dialout() -> None:
    """Every rule matches tty devices and hands them to group dialout, mode 0660."""
    rules = [
        line
        for line in UDEV.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert rules
    for rule in rules:
        assert 'SUBSYSTEM=="tty"' in rule, rule
        assert 'GROUP="dialout"' in rule, rule
        assert 'MODE="0660"' in rule, rule


def test_deploy_doc_walks_a_site_through_commissioning() -> None:
    """docs/deploy.md names the files and the commissioning checklist's checks."""
    text = DOC.read_text()
    for needle in (
        "deploy/systemd/",
        "hypoxia-run@.service",
        "deploy/compose.yaml",
        "deploy/udev/99-hypoxia-serial.rules",
        "examples/sites/serial-by-id.toml",
        "20.9",
        "hypoxia devices read",
        "hypoxia audit verify",
        "gas",
        "reboot",
        "status 70",
    ):
        assert needle in text, needle
