"""What-if sweeps: one recipe on one vessel over a grid of parameters, in parallel processes.

A parameter is ``NAME=LIST`` where LIST is comma-separated numbers (``0.05,0.1,0.2``) or an
inclusive range ``START:STOP:STEP`` (``0.05:0.2:0.05``). Each grid point becomes a vessel and a
recipe; combinations the vessel cannot physically do (``check_feasible`` raises
:class:`ConfigError`) become rows that say why instead of runs.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from common.config_errors import ConfigError, ConfigErrorList, validate_model
from controller.core.recipe import Phase, Recipe, check_feasible
from simulators.summary import METRIC_BAND_PCT, o2_metrics
from simulators.twin import DoorOpening, _time_limit_s, run_twin
from simulators.vessel import Vessel

MAX_RUNS = 500
"""Largest grid a sweep accepts."""


@dataclass(frozen=True, slots=True)
class Param:
    """One sweepable parameter: allowed range (inclusive) and what it changes."""

    name: str
    low: float
    high: float
    help: str
    integer: bool = False


PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("leak_lpm", 0.0, 50.0, "vessel leak exchange with room air, L/min"),
        Param("volume_l", 0.01, 10_000.0, "controlled gas volume, L"),
        Param("n2_max_lpm", 0.01, 1000.0, "N2 supply maximum, L/min"),
        Param("co2_max_lpm", 0.01, 1000.0, "CO2 supply maximum, L/min"),
        Param("air_max_lpm", 0.0, 1000.0, "air supply maximum, L/min"),
        Param("o2_pct", 0.0, 100.0, "O2 set point of the recipe's lowest-O2 gas phases, %"),
        Param("doors_per_day", 0.0, 96.0, "door openings per day, evenly spaced"),
        Param("door_s", 1.0, 600.0, "length of each door opening, s"),
        Param("seed", 0.0, 2**31 - 1, "sensor-noise seed", integer=True),
    )
}
GAS_PARAMS = ("leak_lpm", "volume_l", "n2_max_lpm", "co2_max_lpm", "air_max_lpm")


class SweepError(ValueError):
    """A ``--param`` is malformed, unknown or out of range (message names it)."""


def _allowed() -> str:
    return ", ".join(f"{p.name} ({p.low:.10g}..{p.high:.10g})" for p in PARAMS.values())


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"--param {name}: '{text}' is not a number"
        raise SweepError(msg) from None
    if not math.isfinite(value):
        msg = f"--param {name}: '{text}' is not a finite number"
        raise SweepError(msg)
    return value


def parse_param(spec: str) -> tuple[str, list[float]]:
    """``"leak_lpm=0.05,0.1"`` or ``"leak_lpm=0.05:0.2:0.05"`` -> name and values.

    Raises:
        SweepError: naming the parameter and the allowed names, ranges or syntax.
    """
    name, sep, text = spec.partition("=")
    name = name.strip()
    if not sep or not text.strip():
        msg = f"--param '{spec}': expected NAME=LIST (e.g. leak_lpm=0.05,0.1 or 0:10:2)"
        raise SweepError(msg)
    param = PARAMS.get(name)
    if param is None:
        msg = f"--param {name}: unknown parameter; allowed: {_allowed()}"
        raise SweepError(msg)
    if ":" in text:
        parts = [_number(p, name) for p in text.split(":")]
        if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
            msg = f"--param {name}: a range is START:STOP:STEP with STOP >= START and STEP > 0"
            raise SweepError(msg)
        start, stop, step = parts
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_RUNS:
            msg = f"--param {name}: {count} values; allowed: at most {MAX_RUNS}"
            raise SweepError(msg)
        values = [round(start + i * step, 12) for i in range(count)]
    else:
        values = [_number(p, name) for p in text.split(",") if p.strip()]
    for v in values:
        if not param.low <= v <= param.high or (param.integer and v != int(v)):
            kind = "an integer" if param.integer else "a number"
            allowed = f"{kind} in {param.low:.10g}..{param.high:.10g}"
            msg = f"--param {name}: {v:g} is out of range; allowed: {allowed}"
            raise SweepError(msg)
    return name, values


def build_grid(specs: Sequence[str]) -> list[dict[str, float]]:
    """Cartesian product of the parsed ``--param`` specs (each name at most once)."""
    parsed: dict[str, list[float]] = {}
    for spec in specs:
        name, values = parse_param(spec)
        if name in parsed:
            msg = f"--param {name}: given twice; give all its values in one LIST"
            raise SweepError(msg)
        parsed[name] = values
    size = math.prod(len(v) for v in parsed.values())
    if size > MAX_RUNS:
        msg = f"--param: the grid has {size} points; allowed: at most {MAX_RUNS}"
        raise SweepError(msg)
    return [dict(zip(parsed, combo, strict=True)) for combo in itertools.product(*parsed.values())]


def apply_point(
    recipe: Recipe, vessel: Vessel, point: dict[str, float]
) -> tuple[Recipe, Vessel, list[DoorOpening], int]:
    """The recipe, vessel, door openings and seed of one grid point.

    Raises:
        ConfigError: if the changed vessel or recipe is not valid.
    """
    gas = {k: point[k] for k in GAS_PARAMS if k in point}
    if gas:
        data = vessel.model_dump()
        data["gas"].update(gas)
        vessel = validate_model(f"vessel {vessel.name} with {gas}", data, Vessel)
    if "o2_pct" in point:
        gas_o2 = [p.o2_pct for p in recipe.phases if p.o2_pct is not None and p.o2_basis == "gas"]
        lowest = min(gas_o2) if gas_o2 else None
        phases: list[Phase] = [
            p.model_copy(update={"o2_pct": point["o2_pct"]})
            if lowest is not None and p.o2_pct == lowest and p.o2_basis == "gas"
            else p
            for p in recipe.phases
        ]
        data = recipe.model_dump()
        data["phases"] = [p.model_dump() for p in phases]
        recipe = validate_model(f"recipe with o2_pct={point['o2_pct']:g}", data, Recipe)
    doors: list[DoorOpening] = []
    per_day = point.get("doors_per_day", 0.0)
    if per_day > 0:
        period = 86400.0 / per_day
        horizon = _time_limit_s(recipe)
        count = int(horizon // period)
        doors = [DoorOpening((k + 0.5) * period, point.get("door_s", 30.0)) for k in range(count)]
    return recipe, vessel, doors, int(point.get("seed", 0))


def run_point(recipe: Recipe, vessel: Vessel, point: dict[str, float]) -> dict[str, Any]:
    """Run one grid point; infeasible or invalid points return a row saying why."""
    row: dict[str, Any] = dict(point)
    try:
        recipe_p, vessel_p, doors, seed = apply_point(recipe, vessel, point)
        check_feasible(recipe_p, vessel_p.process_model(), "recipe", vessel_p.name)
    except ConfigError as exc:
        found = exc.errors if isinstance(exc, ConfigErrorList) else [exc]
        row["status"] = "infeasible: " + "; ".join(f"{e.field}: {e.problem}" for e in found)
        return row
    result = run_twin(recipe_p, vessel_p, seed=seed, doors=doors, record_every_s=600.0)
    o2 = o2_metrics(result)
    gas = result.plant.state.gas_used_l
    days = max(result.duration_s / 86400.0, 1e-9)
    row.update(
        status="ok" if result.finished else "did not complete",
        duration_h=result.duration_s / 3600.0,
        time_to_band_min=None if o2["time_to_band_s"] is None else o2["time_to_band_s"] / 60.0,
        ratio=o2["ratio"],
        undershoot_pct=o2["undershoot_pct"],
        steady_2sigma_pct=o2["steady_2sigma_pct"],
        in_band_pct=_in_band_pct(result.recipe, result.trace),
        doors=len(doors),
        n2_l=gas["n2"],
        n2_l_per_day=gas["n2"] / days,
        co2_l=gas["co2"],
        air_l=gas["air"],
    )
    return row


def _in_band_pct(recipe: Recipe, trace: Any) -> float | None:
    """Share of time the measured O2 was within each gas O2 phase's band, after first entry, %."""
    inside = total = 0
    entered: set[int] = set()
    for i, index in enumerate(trace.phase):
        phase = recipe.phases[index] if index < len(recipe.phases) else None
        if phase is None or phase.o2_pct is None or phase.o2_basis != "gas":
            continue
        ok = abs(trace.o2_pct[i] - phase.o2_pct) <= max(phase.o2_band_pct, METRIC_BAND_PCT)
        if ok:
            entered.add(index)
        if index in entered:
            total += 1
            inside += ok
    return 100.0 * inside / total if total else None


def default_jobs() -> int:
    """Worker processes when none are asked for: one per CPU (``os.cpu_count()``)."""
    return os.cpu_count() or 1


def run_sweep(
    recipe: Recipe,
    vessel: Vessel,
    grid: list[dict[str, float]],
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point across ``jobs`` processes; the rows come back in grid order.

    Each point is a whole twin run that depends only on the point (its seed included), so the
    rows are the same whatever ``jobs`` and the order in which the processes finish.

    Args:
        recipe: The recipe every point varies.
        vessel: The vessel every point varies.
        grid: The points (:func:`build_grid`).
        jobs: Worker processes (``None``: one per CPU; 1: in this process, no pool).
        progress: Called with (points done, points in all) as each point finishes.
    """
    total = len(grid)
    jobs = min(default_jobs() if jobs is None else jobs, total)
    if jobs <= 1:
        rows = []
        for i, point in enumerate(grid):
            rows.append(run_point(recipe, vessel, point))
            if progress:
                progress(i + 1, total)
        return rows
    done: list[dict[str, Any] | None] = [None] * total
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_point, recipe, vessel, p): i for i, p in enumerate(grid)}
        for count, fut in enumerate(as_completed(futures), start=1):
            done[futures[fut]] = fut.result()
            if progress:
                progress(count, total)
    return [row for row in done if row is not None]
