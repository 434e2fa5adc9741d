"""Every class of bad recipe or vessel file fails before anything runs, with one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import hypoxia

GOOD_PHASE = """
[[phases]]
name = "hold"
o2_pct = 2.0
co2_pct = 5.0
duration_h = 24
until = "exposure"
"""


def _write(tmp_path: Path, body: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


BAD_RECIPES = {
    "unknown key": (
        f'name = "r"\n{GOOD_PHASE}o2_setpoint = 3\n',
        "phases[0].o2_setpoint",
        "unknown key; allowed keys:",
    ),
    "wrong type": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = "two"\nduration_h = 1\n',
        "phases[0].o2_pct",
        "valid number",
    ),
    "wrong unit": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = "2 mmHg"\nduration_h = 1\n',
        "phases[0].o2_pct",
        "units go in the field name",
    ),
    "unit in a duration": (
        'name = "r"\n[[phases]]\nname = "h"\nduration_h = "48 min"\n',
        "phases[0].duration_h",
        "units go in the field name",
    ),
    "negative duration": (
        'name = "r"\n[[phases]]\nname = "h"\nduration_h = -1\n',
        "phases[0].duration_h",
        "greater than 0",
    ),
    "O2 above 100 %": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = 120\nduration_h = 1\n',
        "phases[0].o2_pct",
        "less than or equal to 100",
    ),
    "O2 below 0 %": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = -1\nduration_h = 1\n',
        "phases[0].o2_pct",
        "greater than or equal to 0",
    ),
    "harvest after the phase ends": (
        f'name = "r"\n{GOOD_PHASE}[[phases.harvests]]\nname = "H"\nat_exposure_h = 30\n',
        "phases[0]",
        "can never be reached",
    ),
    "harvest latest before its exposure": (
        f'name = "r"\n{GOOD_PHASE}[[phases.harvests]]\nname = "H"\nat_exposure_h = 20\n'
        "latest_h = 10\n",
        "phases[0].harvests[0]",
        "can never be reached",
    ),
    "harvest without an O2 set point": (
        'name = "r"\n[[phases]]\nname = "h"\nduration_h = 5\n[[phases.harvests]]\nname = "H"\n'
        "at_exposure_h = 1\n",
        "phases[0]",
        "exposure never accrues",
    ),
    "ramp faster than the vessel can follow": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = 1.0\no2_ramp_pct_per_min = 5.0\n'
        "duration_h = 1\n",
        "phases[0].o2_ramp_pct_per_min",
        "allowed: <=",
    ),
    "set point below the leak floor": (
        'name = "r"\n[[phases]]\nname = "h"\no2_pct = 0.05\nduration_h = 1\n',
        "phases[0].o2_pct",
        "bottoms out",
    ),
    "not TOML": ('name = "r\n', "", "not valid TOML"),
    "no phases": ('name = "r"\nphases = []\n', "phases", "at least 1"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_fails_before_running(case: str, tmp_path: Path) -> None:
    body, field, allowed = BAD_RECIPES[case]
    recipe = _write(tmp_path, body)
    out_dir = tmp_path / "out"
    result = hypoxia(
        "simulate", str(recipe), "--vessel", "workstation-100l", "--out", str(out_dir), "--json"
    )
    assert result.returncode == 2
    assert result.stdout == ""  # nothing printed as if it were a summary
    message = " ".join(result.stderr.split())
    assert str(recipe) in message
    assert f"{field}:" in message or field == ""
    assert allowed in message
    assert not out_dir.exists()  # nothing half-started


BAD_VESSELS = {
    "unknown key": ("volume_l = 50.0", "volume_liters = 50.0", "gas.volume_liters", "unknown key"),
    "wrong type": ("volume_l = 50.0", 'volume_l = "big"', "gas.volume_l", "valid number"),
    "negative leak": (
        "leak_lpm = 0.4",
        "leak_lpm = -0.1",
        "gas.leak_lpm",
        "greater than or equal to 0",
    ),
    "missing section": ("[thermal]", "[thermals]", "thermal", "required but missing"),
}


@pytest.mark.parametrize("case", list(BAD_VESSELS))
def test_bad_vessel_file_fails_with_field(case: str, tmp_path: Path) -> None:
    base = Path("examples/vessels/workstation-50l-leaky.toml").read_text()
    old, new, field, allowed = BAD_VESSELS[case]
    assert old in base
    vessel = _write(tmp_path, base.replace(old, new, 1), "v.toml")
    result = hypoxia("check", "examples/recipes/hypoxia-2pct-48h.toml", "--vessel", str(vessel))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"{vessel}: {field}:" in message
    assert allowed in message


def test_unknown_vessel_name_lists_the_reference_vessels() -> None:
    result = hypoxia("check", "examples/recipes/hypoxia-2pct-48h.toml", "--vessel", "tank-9000")
    assert result.returncode == 2
    assert "workstation-100l" in result.stderr
    assert "--vessel" in result.stderr


def test_bad_door_option_names_the_option() -> None:
    result = hypoxia(
        "simulate",
        "examples/recipes/hypoxia-2pct-48h.toml",
        "--vessel",
        "workstation-100l",
        "--door-open",
        "noon",
    )
    assert result.returncode == 2
    assert "--door-open" in result.stderr


@pytest.mark.parametrize(
    ("recipe", "vessel"),
    [
        ("hypoxia-2pct-48h", "workstation-100l"),
        ("hypoxia-1pct-72h-daily", "workstation-100l"),
        ("anoxia-24h", "incubator-170l"),
        ("bioreactor-do-5pct-24h", "bioreactor-2l"),
        ("hypoxia-2pct-48h", "examples/vessels/workstation-50l-leaky.toml"),
    ],
)
def test_examples_are_feasible(recipe: str, vessel: str) -> None:
    result = hypoxia("check", f"examples/recipes/{recipe}.toml", "--vessel", vessel)
    assert result.returncode == 0, result.stderr
    assert "feasible" in result.stdout
