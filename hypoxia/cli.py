"""The ``hypoxia`` command.

``hypoxia simulate`` runs a recipe on the digital twin; ``hypoxia check`` validates a recipe
against a vessel without running it; ``hypoxia vessels`` lists the reference vessels.
Configuration problems exit with status 2 and one message naming the file, field and what is
allowed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from common.config_errors import ConfigError
from hypoxia.cli_common import err, fail, out

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Monitoring and control of hypoxic preconditioning of stem-cell cultures.",
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d)?\s*$")
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str, option: str) -> float:
    """``"30h"``, ``"90min"``, ``"45s"`` or ``"1800"`` (seconds) -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        msg = (
            f"{option}: '{text}' is not a duration; allowed: a number with an optional unit "
            "s, min, h or d (e.g. 30h, 90min, 1800)"
        )
        raise typer.BadParameter(msg)
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _load(recipe_path: Path, vessel_arg: str) -> tuple[Any, Any]:
    from controller.core.recipe import check_feasible
    from controller.service.recipe_source import RecipeSource
    from simulators.vessel import load_vessel, with_recipe_growth

    vessel = load_vessel(vessel_arg)
    recipe = RecipeSource.from_file(recipe_path).recipe
    check_feasible(recipe, vessel.process_model(), str(recipe_path), vessel.name)
    with_recipe_growth(vessel, recipe, str(recipe_path))  # a cap below the start: an error now
    return recipe, vessel


@app.command()
def simulate(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
    vessel: Annotated[str, typer.Option(help="Reference vessel name or vessel TOML file.")],
    seed: Annotated[int, typer.Option(help="Seed of the sensor noise.")] = 0,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: sim-out/<recipe>-<vessel>)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print exactly the summary JSON on stdout.")
    ] = False,
    door_open: Annotated[
        list[str] | None,
        typer.Option(
            "--door-open",
            metavar="AT[:SECONDS]",
            help="Inject a door opening at AT (e.g. 30h, 90min, 1800) lasting SECONDS (30).",
        ),
    ] = None,
    record_every: Annotated[
        float, typer.Option(help="Period of the recorded time series, s.", min=0.1)
    ] = 10.0,
) -> None:
    """Run RECIPE on the digital twin in lockstep and write series, events, summary and plot."""
    from simulators.report import summary_json, write_outputs
    from simulators.summary import summarize
    from simulators.twin import DoorOpening, run_twin

    doors = []
    for spec in door_open or []:
        at, _, length = spec.partition(":")
        duration = parse_duration_s(length, "--door-open SECONDS") if length else 30.0
        doors.append(DoorOpening(parse_duration_s(at, "--door-open AT"), duration))
    try:
        recipe, vessel_model = _load(recipe_path, vessel)
    except ConfigError as exc:
        raise fail(exc) from None
    target = out_dir or Path("sim-out") / f"{recipe_path.stem}-{vessel_model.name}"
    if not as_json:
        err.print(f"simulating [bold]{recipe.name}[/] on [bold]{vessel_model.name}[/] ...")
    result = run_twin(recipe, vessel_model, seed=seed, doors=doors, record_every_s=record_every)
    summary = summarize(result)
    paths = write_outputs(result, summary, target)
    paths.update(
        _twin_record(result, summary, recipe_path, f"{recipe_path.stem}-seed{seed}", target)
    )
    if as_json:
        sys.stdout.write(summary_json(summary) + "\n")
        return
    _print_summary(summary, paths)


def _twin_record(
    result: Any, summary: dict[str, Any], recipe_path: Path, name: str, target: Path
) -> dict[str, Path]:
    """``record.html``: the twin run's batch record, in the same format as a service run's."""
    from controller.service.recipe_source import RecipeSource
    from records.make import write_record
    from records.twin import twin_record

    source = RecipeSource.from_file(recipe_path)
    rec = twin_record(result, summary, f"twin {name}", source.text, source.sha256)
    return {"record": write_record(rec, target, with_pdf=False)["html"]}


def _fmt(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def _print_summary(summary: dict[str, Any], paths: dict[str, Path]) -> None:
    o2 = summary["o2"]
    state = "completed" if summary["completed"] else "[red]did not complete[/]"
    out.print(
        f"{summary['recipe']} on {summary['vessel']}: {state} after "
        f"{summary['duration_s'] / 3600:.2f} h simulated"
    )
    if o2.get("bang_bang_min_s") is not None:
        out.print(
            f"O2 to {o2['setpoint_pct']} +/- 0.1 %: {_fmt(o2['time_to_band_s'], 60, 1)} min "
            f"(physical minimum {_fmt(o2['bang_bang_min_s'], 60, 1)} min, ratio "
            f"{_fmt(o2['ratio'], 1, 2)}); undershoot {_fmt(o2['undershoot_pct'])} %; "
            f"steady 2 sigma {_fmt(o2['steady_2sigma_pct'])} %"
        )
    table = Table(
        "harvest",
        "at h",
        "exposure h",
        "O2 mean %",
        "in band",
        "excursions",
        "dose error %.h",
        title="harvests",
    )
    for h in summary["harvests"]:
        table.add_row(
            h["name"],
            _fmt(h["at_s"], 3600, 2),
            _fmt(h["exposure_s"], 3600, 2),
            _fmt(h["o2_mean_pct"]),
            _fmt(h["in_band_frac"]),
            str(h["excursions"]),
            _fmt(h["dose_error_pct_h"]),
        )
    out.print(table)
    gas = ", ".join(f"{k.upper()} {v:.0f} L" for k, v in summary["gas_l"].items() if v > 0)
    out.print(f"gas used: {gas}")
    if "ramp" in paths:
        out.print(f"ramp:    {paths['ramp']}")
    out.print(
        f"record:  {paths['record']}\nplot:    {paths['plot']}\nsummary: {paths['summary']}\n"
        f"series:  {paths['timeseries']}\nevents:  {paths['events']}"
    )


@app.command()
def check(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe TOML file.")],
    vessel: Annotated[str, typer.Option(help="Reference vessel name or vessel TOML file.")],
) -> None:
    """Validate RECIPE against a vessel's physics without running anything."""
    try:
        recipe, vessel_model = _load(recipe_path, vessel)
    except ConfigError as exc:
        raise fail(exc) from None
    out.print(f"ok: {recipe_path} ({len(recipe.phases)} phases) is feasible on {vessel_model.name}")


@app.command()
def vessels() -> None:
    """List the reference vessels and their main parameters."""
    from simulators.vessel import load_vessel, reference_vessel_names

    table = Table("name", "volume L", "leak L/min", "N2 max L/min", "description")
    for name in reference_vessel_names():
        v = load_vessel(name)
        table.add_row(
            name,
            f"{v.gas.volume_l:g}",
            f"{v.gas.leak_lpm:g}",
            f"{v.gas.n2_max_lpm:g}",
            v.description,
        )
    out.print(table)


def _register() -> None:
    from hypoxia.cli_calibrate import calibrate
    from hypoxia.cli_demo import demo
    from hypoxia.cli_devices import devices_app, simulate_devices
    from hypoxia.cli_identify import identify
    from hypoxia.cli_record import record
    from hypoxia.cli_records import archive, export, report, runs
    from hypoxia.cli_run import audit_app, ctl_app, run
    from hypoxia.cli_tuning import tuning_app
    from hypoxia.cli_users import users_app

    app.command("demo")(demo)
    app.command("simulate-devices")(simulate_devices)
    app.add_typer(devices_app, name="devices")
    app.command("run")(run)
    app.command("record")(record)
    app.add_typer(ctl_app, name="ctl")
    app.add_typer(audit_app, name="audit")
    app.command("report")(report)
    app.command("runs")(runs)
    app.command("export")(export)
    app.command("archive")(archive)
    app.add_typer(users_app, name="users")
    app.command("calibrate")(calibrate)
    app.command("identify")(identify)
    app.registered_commands += tuning_app.registered_commands


_register()


def main() -> None:
    """Console entry point."""
    app()
