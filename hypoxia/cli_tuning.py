"""``hypoxia tune`` (relay autotuning on the twin) and ``hypoxia sweep`` (what-if grids).

Registered in :mod:`hypoxia.cli` with ``app.registered_commands += tuning_app.registered_commands``.
Configuration problems exit with status 2 and one message naming the option or file and what is
allowed, as every other ``hypoxia`` command.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common.config_errors import ConfigError
from controller.core.reactor import ControllerTuning, ReactorController
from controller.core.recipe import Recipe, check_feasible
from controller.engineering.autotune import LOOP_NAMES, LoopName, RelayResult
from controller.engineering.tuning_file import load_tuning, tuning_toml
from controller.service.recipe_source import RecipeSource
from simulators.sweep import SweepError, build_grid, default_jobs, run_sweep
from simulators.tuning_twin import autotune_on_twin, operating_phase, verify_on_twin
from simulators.vessel import Vessel, load_vessel

tuning_app = typer.Typer(add_completion=False, no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

EXIT_CONFIG = 2


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_CONFIG)


def _loops(text: str) -> list[LoopName]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in LOOP_NAMES]
    if bad or not names:
        raise _fail(f"--loops: '{text}'; allowed: a comma list of {', '.join(LOOP_NAMES)}")
    return [n for n in LOOP_NAMES if n in names]


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def _result_row(r: RelayResult, current: tuple[float, float]) -> list[str]:
    if not r.ok or r.model is None or r.tuning is None or r.margins is None:
        return [r.loop, r.branch, *["-"] * 10, f"{_num(current[0])} / {_num(current[1])}", r.reason]
    m, t, g = r.model, r.tuning, r.margins
    return [
        r.loop,
        r.branch,
        _num(r.ku_per_s),
        _num(r.period_s),
        _num(m.gain),
        _num(m.dead_time_s + m.lag_s),
        _num(t.kp_per_s),
        _num(t.ti_s),
        _num(g.gain_margin),
        _num(g.phase_margin_deg),
        _num(g.ms),
        _num(t.tau_c_factor),
        f"{_num(current[0])} / {_num(current[1])}",
        "",
    ]


@tuning_app.command()
def tune(
    vessel: Annotated[str, typer.Option(help="Reference vessel name or vessel TOML file.")],
    o2_pct: Annotated[float, typer.Option("--o2", help="O2 operating point, %.")] = 1.0,
    co2_pct: Annotated[float, typer.Option("--co2", help="CO2 operating point, %.")] = 5.0,
    temp_c: Annotated[
        float, typer.Option("--temp", help="Temperature operating point, degC.")
    ] = 37.0,
    loops: Annotated[str, typer.Option(help="Loops to tune, in order.")] = "o2,co2,temp",
    tuning_file: Annotated[
        Path | None, typer.Option("--tuning", help="Starting gains: a TOML file with [tuning].")
    ] = None,
    write: Annotated[
        Path | None, typer.Option(help="Write the proposed gains as a [tuning] TOML snippet.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sensor noise.")] = 0,
) -> None:
    """Relay-autotune the loops on the digital twin and propose PI gains with their margins.

    The relay (Åström-Hägglund, with hysteresis above the sensor noise, N2 alone for O2 where
    the leak allows) runs around the operating point; the proposed gains are then verified on
    the twin (fastest descent to the O2 operating point and a 2 h hold: targets T1, T2, T4).
    """
    names = _loops(loops)
    try:
        plant = load_vessel(vessel)
        start = load_tuning(tuning_file) if tuning_file else ControllerTuning()
        phase = operating_phase(o2_pct, co2_pct, temp_c)
        check_feasible(
            Recipe(name="tune", phases=[phase]), plant.process_model(), "--o2", plant.name
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    err.print(f"relay autotuning {', '.join(names)} on [bold]{plant.name}[/] (digital twin) ...")
    session = autotune_on_twin(plant, phase, tuning=start, loops=names, seed=seed)
    before = ReactorController(plant.process_model(), start)
    columns = "loop,relay branch,Ku 1/s,Pu s,k,theta_eff s,kp 1/s,Ti s,GM,PM deg,Ms,tau_c/theta"
    table = Table(
        *columns.split(","),
        "start kp / Ti",
        "note",
        title=f"proposed PI gains (linearised loop), {plant.name} at {o2_pct:g} % O2",
    )
    for name in names:
        pi = getattr(before, name).pi
        table.add_row(*_result_row(session.results[name], (pi.kp_per_s, pi.ti_s)))
    out.print(table)
    learned = session.adapted()
    if learned:
        model = plant.process_model()
        out.print(
            f"observer (adapted on the twin): volume {_num(learned['volume_l'])} L (model "
            f"{_num(model.volume_l)}), leak {_num(learned['leak_lpm'])} L/min (model "
            f"{_num(model.leak_lpm)}), O2 delay + lag {_num(learned['o2_lag_s'])} s (model "
            f"{_num(model.transport_delay_s + model.o2_sensor_t63_s)})"
        )
    check = verify_on_twin(plant, session.proposed, o2_pct, seed=seed)
    out.print(
        f"on the twin with these gains: O2 ratio {_num(check['ratio'])} (limit "
        f"{_num(check['ratio_limit'])}), undershoot {_num(check['undershoot_pct'])} % "
        f"(<= 0.1), steady 2 sigma {_num(check['steady_2sigma_pct'])} % (<= 0.1)"
    )
    failed = [r.loop for r in session.results.values() if not r.ok]
    if write is not None:
        header = (
            f"hypoxia tune --vessel {vessel} --o2 {o2_pct:g} --co2 {co2_pct:g} --temp {temp_c:g}\n"
            f"relay autotune on the digital twin; kp_per_s and ti_s act on the linearised loop"
        )
        write.write_text(tuning_toml(session.proposed, header))
        out.print(f"written: {write}")
    if failed:
        raise typer.Exit(1)


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


SWEEP_COLUMNS = (
    ("status", "status", 0),
    ("time_to_band_min", "to band min", 3),
    ("ratio", "ratio", 3),
    ("undershoot_pct", "undershoot %", 2),
    ("steady_2sigma_pct", "2 sigma %", 2),
    ("in_band_pct", "in band %", 4),
    ("doors", "doors", 0),
    ("n2_l_per_day", "N2 L/day", 4),
    ("co2_l", "CO2 L", 3),
)


def _sweep_with_bar(
    recipe: Recipe, vessel: Vessel, grid: list[dict[str, float]], jobs: int
) -> list[dict[str, Any]]:
    """:func:`run_sweep` with a progress bar on stderr (runs done of all, elapsed time)."""
    with Progress(
        TextColumn("[bold]runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("sweep", total=len(grid))
        return run_sweep(
            recipe, vessel, grid, jobs=jobs, progress=lambda n, _t: bar.update(task, completed=n)
        )


@tuning_app.command()
def sweep(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
    vessel: Annotated[str, typer.Option(help="Reference vessel name or vessel TOML file.")],
    param: Annotated[
        list[str],
        typer.Option(
            metavar="NAME=LIST",
            help="Parameter and values: 0.05,0.1,0.2 or START:STOP:STEP. Repeat for a grid. "
            "Names: leak_lpm, volume_l, n2_max_lpm, co2_max_lpm, air_max_lpm, o2_pct, "
            "doors_per_day, door_s, seed.",
        ),
    ],
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            "--workers",
            help="Parallel processes (default: one per CPU).",
            min=1,
            max=256,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the rows as CSV.")] = False,
) -> None:
    """Run RECIPE on the twin over a grid of what-if parameters and tabulate the outcome."""
    try:
        grid = build_grid(param)
        base = load_vessel(vessel)
        recipe = RecipeSource.from_file(recipe_path).recipe
    except SweepError as exc:
        raise _fail(str(exc)) from None
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if any("o2_pct" in point for point in grid) and not any(
        p.o2_pct is not None and p.o2_basis == "gas" for p in recipe.phases
    ):
        raise _fail(f"--param o2_pct: {recipe_path} has no gas O2 phase to change")
    quiet = as_json or as_csv
    jobs = min(jobs or default_jobs(), len(grid))
    if not quiet:
        err.print(
            f"sweeping {len(grid)} runs of [bold]{recipe.name}[/] on {base.name} "
            f"in {jobs} process{'es' if jobs > 1 else ''} ..."
        )
    if quiet and not err.is_terminal:  # rows on stdout for a program: no bar on a log
        rows = run_sweep(recipe, base, grid, jobs=jobs)
    else:
        rows = _sweep_with_bar(recipe, base, grid, jobs)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    if as_csv:
        sys.stdout.write(_rows_csv(rows))
        return
    names = list(grid[0]) if grid else []
    table = Table(*names, *(title for _key, title, _d in SWEEP_COLUMNS), title=recipe.name)
    for row in rows:
        cells = [f"{row[n]:g}" for n in names]
        for key, _title, digits in SWEEP_COLUMNS:
            value = row.get(key)
            if isinstance(value, str) or value is None:
                cells.append("-" if value is None else value)
            else:
                cells.append(_num(value, digits) if digits else str(value))
        table.add_row(*cells)
    out.print(table)
