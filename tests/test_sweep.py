"""`hypoxia sweep`: parameter parsing and validation, and a tiny grid in parallel processes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.service.recipe_source import RecipeSource
from hypoxia.cli_tuning import tuning_app
from simulators.sweep import SweepError, build_grid, default_jobs, parse_param, run_sweep
from simulators.vessel import load_vessel

RECIPE = """
name = "short hold"
[[phases]]
name = "equilibrate"
co2_pct = 5.0
duration_h = 0.1
[[phases]]
name = "hold"
o2_pct = 2.0
o2_band_pct = 0.2
co2_pct = 5.0
duration_h = 0.6
"""


def test_parse_lists_and_inclusive_ranges() -> None:
    assert parse_param("leak_lpm=0.05,0.1, 0.2") == ("leak_lpm", [0.05, 0.1, 0.2])
    assert parse_param("o2_pct=1:2:0.5") == ("o2_pct", [1.0, 1.5, 2.0])
    assert parse_param("seed=3") == ("seed", [3.0])
    grid = build_grid(["leak_lpm=0.1,0.2", "doors_per_day=0,4,8"])
    assert len(grid) == 6
    assert grid[0] == {"leak_lpm": 0.1, "doors_per_day": 0.0}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("leak=0.1", "--param leak: unknown parameter; allowed: leak_lpm (0..50)"),
        ("leak_lpm=-0.1", "--param leak_lpm: -0.1 is out of range; allowed: a number in 0..50"),
        ("o2_pct=2,abc", "--param o2_pct: 'abc' is not a number"),
        ("o2_pct", "expected NAME=LIST"),
        ("o2_pct=2:1:0.5", "a range is START:STOP:STEP with STOP >= START and STEP > 0"),
        ("seed=1.5", "--param seed: 1.5 is out of range; allowed: an integer"),
        ("volume_l=nan", "is not a finite number"),
    ],
)
def test_bad_params_name_the_param_and_what_is_allowed(spec: str, expected: str) -> None:
    with pytest.raises(SweepError) as info:
        build_grid([spec])
    assert expected in str(info.value)


def test_repeated_param_and_oversized_grid_are_refused() -> None:
    with pytest.raises(SweepError, match="given twice"):
        build_grid(["leak_lpm=0.1", "leak_lpm=0.2"])
    with pytest.raises(SweepError, match="at most 500"):
        build_grid(["seed=0:30:1", "leak_lpm=0:0.3:0.01"])


def test_tiny_grid_runs_in_parallel_and_reports_infeasible_rows(tmp_path: Path) -> None:
    recipe = tmp_path / "short.toml"
    recipe.write_text(RECIPE)
    args = ["sweep", str(recipe), "--vessel", "workstation-100l", "--jobs", "2"]
    args += ["--param", "o2_pct=2,0.05", "--param", "doors_per_day=0,48"]
    result = CliRunner().invoke(tuning_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["o2_pct"], r["doors_per_day"]) for r in rows] == [
        (2.0, 0.0),
        (2.0, 48.0),
        (0.05, 0.0),
        (0.05, 48.0),
    ]
    ok, doors = rows[0], rows[1]
    assert ok["status"] == "ok"
    assert ok["ratio"] is not None
    assert ok["ratio"] < 1.3
    assert ok["doors"] == 0
    assert doors["doors"] >= 1
    assert doors["n2_l"] > ok["n2_l"]  # every door costs a purge
    for row in rows[2:]:
        assert row["status"].startswith("infeasible: phases[1].o2_pct: 0.05 % cannot be held")
        assert "bottoms out at 0.099 %" in row["status"]


def test_csv_output_and_cli_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "short.toml"
    recipe.write_text(RECIPE)
    runner = CliRunner()
    base = ["sweep", str(recipe), "--vessel", "workstation-100l", "--workers", "1"]
    out = runner.invoke(tuning_app, [*base, "--param", "leak_lpm=0.1", "--csv"])
    assert out.exit_code == 0, out.output
    table = list(csv.DictReader(io.StringIO(out.output)))
    assert table[0]["leak_lpm"] == "0.1"
    assert table[0]["status"] == "ok"
    bad = runner.invoke(tuning_app, [*base, "--param", "volume=3"])
    assert bad.exit_code == 2
    assert "unknown parameter; allowed:" in bad.output


def test_rows_are_the_same_in_grid_order_whatever_the_number_of_processes(tmp_path: Path) -> None:
    recipe_file = tmp_path / "short.toml"
    recipe_file.write_text(RECIPE)
    recipe = RecipeSource.from_file(recipe_file).recipe
    vessel = load_vessel("workstation-100l")
    grid = build_grid(["seed=0,1,2", "leak_lpm=0.1"])
    calls: list[tuple[int, int]] = []
    parallel = run_sweep(recipe, vessel, grid, jobs=3, progress=lambda n, t: calls.append((n, t)))
    serial = run_sweep(recipe, vessel, grid, jobs=1)
    assert parallel == serial  # same rows, bit for bit, in grid order
    assert [r["seed"] for r in parallel] == [0.0, 1.0, 2.0]
    assert len({r["n2_l"] for r in parallel}) == 3  # the seeds do differ (sensor noise)
    assert calls == [(1, 3), (2, 3), (3, 3)]  # one tick per finished run, in finishing order
    assert default_jobs() >= 1


def test_table_output_shows_the_process_count_and_a_progress_bar(tmp_path: Path) -> None:
    recipe = tmp_path / "short.toml"
    recipe.write_text(RECIPE)
    args = ["sweep", str(recipe), "--vessel", "workstation-100l", "-j", "2"]
    result = CliRunner().invoke(tuning_app, [*args, "--param", "seed=0,1"])
    assert result.exit_code == 0, result.output
    assert "sweeping 2 runs of short hold on workstation-100l in 2 processes" in result.output
    assert "runs" in result.output
    assert "2/2" in result.output  # the bar's final state: every run done
    assert "short hold" in result.output  # the table's title
