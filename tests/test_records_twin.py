"""Twin runs get the same record: `hypoxia simulate --out DIR` writes record.html beside
summary.json, with the figures of the summary and the door's excursion on the right harvest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from records.pdf import screenshot
from tests.cli import hypoxia
from tests.records_kit import ARTIFACTS, DOOR_RECIPE, ink_fraction

DOOR_AT_S = 900.0  # after CM-A (3 min of exposure once the ~7 min purge is done)


def test_simulate_writes_the_record_of_the_twin_run(tmp_path: Path) -> None:
    recipe = tmp_path / "door.toml"
    recipe.write_text(DOOR_RECIPE)
    out = tmp_path / "out"
    result = hypoxia(
        "simulate",
        str(recipe),
        "--vessel",
        "workstation-100l",
        "--out",
        str(out),
        "--door-open",
        f"{DOOR_AT_S:.0f}:30",
    )
    assert result.returncode == 0, result.stderr
    assert f"record:  {out / 'record.html'}" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    html = (out / "record.html").read_text()
    assert "digital-twin run (simulated, not a batch)" in html
    a, b = summary["harvests"]
    assert (a["excursions"], b["excursions"]) == (0, 1)
    for h in (a, b):
        assert f"{h['o2_mean_pct']:.4f} %" in html  # the summary's figures, as printed
        assert f"{h['dose_error_pct_h']:.5f} %·h" in html
    section = html.split("Harvest CM-B</h3>", 1)[1].split('<div class="harvest">', 1)[0]
    assert "door (simulated, opened at 0.25 h for 30 s)" in section
    assert "door (simulated" not in html.split("Harvest CM-A</h3>", 1)[1].split("Harvest CM-B")[0]
    if shutil.which("chromium") is not None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = screenshot(out / "record.html", ARTIFACTS / "twin-record.png", height_px=2600)
        assert ink_fraction(shot) > 0.02


def test_a_dissolved_o2_twin_run_has_a_record(tmp_path: Path) -> None:
    result = hypoxia(
        "simulate",
        "examples/recipes/bioreactor-do-5pct-24h.toml",
        "--vessel",
        "bioreactor-2l",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    html = (tmp_path / "record.html").read_text()
    assert "DO 5 ± 0.25 %" in html  # the phase's targets name the dissolved basis
    for h in summary["harvests"]:
        assert f"{h['o2_mean_pct']:.4f} %" in html
    assert "mean over the window (twin model)" in html or "not available" in html
