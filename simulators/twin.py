"""Digital twin in lockstep: plant + sensors + the real controller core, on simulated time.

Each cycle: control on the current readings -> advance the plant one period -> sample the sensors
-> let the recipe engine account exposure and release harvests. No wall clock, no sleeping: a 48 h
protocol runs as fast as the CPU allows. The controller objects are the ones the service uses.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field
from typing import Any

from controller.core.process import ProcessModel
from controller.core.reactor import ControllerTuning, ReactorController
from controller.core.recipe import PhaseEnd, Recipe
from controller.core.recipe_engine import Event, Measured, RecipeEngine
from simulators.plant import Plant
from simulators.sensors import SensorModel
from simulators.vessel import Vessel, with_recipe_growth

SERIES_COLUMNS = (
    "t_s",
    "phase",
    "o2_sp_pct",
    "o2_pct",
    "o2_true_pct",
    "pericellular_o2_pct",
    "do_sp_pct",
    "do_pct",
    "co2_sp_pct",
    "co2_pct",
    "temp_sp_c",
    "temp_c",
    "n2_lpm",
    "air_lpm",
    "o2_lpm",
    "co2_lpm",
    "heater_w",
    "o2_mode",
    "exposure_s",
    "door_open",
)


@dataclass(frozen=True, slots=True)
class DoorOpening:
    """A door opening injected into the twin: start (s since run start) and length (s)."""

    at_s: float
    duration_s: float = 30.0


@dataclass(slots=True)
class Trace:
    """Full-resolution traces used for the summary (one entry per control period)."""

    t_s: array[float] = field(default_factory=lambda: array("d"))
    o2_pct: array[float] = field(default_factory=lambda: array("d"))
    o2_true_pct: array[float] = field(default_factory=lambda: array("d"))
    phase: array[int] = field(default_factory=lambda: array("i"))
    door: array[int] = field(default_factory=lambda: array("b"))
    cells_t_s: array[float] = field(default_factory=lambda: array("d"))
    """Times of the pericellular trajectory (every ``culture.diffusion_step_s``)."""
    cells_o2_pct: array[float] = field(default_factory=lambda: array("d"))
    """Pericellular O2 as %-equivalent at ``cells_t_s`` (empty without a culture)."""


@dataclass(slots=True)
class TwinResult:
    """Everything a twin run produced."""

    recipe: Recipe
    vessel: Vessel
    seed: int
    doors: list[DoorOpening]
    rows: list[tuple[Any, ...]]
    events: list[Event]
    engine: RecipeEngine
    plant: Plant
    trace: Trace
    duration_s: float
    finished: bool


def _time_limit_s(recipe: Recipe) -> float:
    total = 0.0
    for p in recipe.phases:
        hours = p.duration_h
        if p.until is PhaseEnd.EXPOSURE:
            hours = p.max_duration_h if p.max_duration_h is not None else 3 * p.duration_h
        total += hours * 3600.0
    return total + 3600.0


class _Sensors:
    """The twin's sensors (what the drivers would deliver), in recipe units."""

    def __init__(self, vessel: Vessel, plant: Plant, dt_s: float, rng: random.Random) -> None:
        s, delay = plant.state, vessel.gas.transport_delay_s
        self.o2_basis = vessel.o2_sensor.basis
        self.co2_basis = vessel.co2_sensor.basis
        self.plain = vessel.atmosphere is None or (
            self.o2_basis == "dry_pct" and self.co2_basis == "dry_pct"
        )
        o2_0 = plant.gas_reading(s.o2_frac, self.o2_basis)
        self.o2 = SensorModel(vessel.o2_sensor, dt_s, delay, rng, o2_0)
        co2_0 = plant.gas_reading(s.co2_frac, self.co2_basis)
        self.co2 = SensorModel(vessel.co2_sensor, dt_s, delay, rng, co2_0)
        self.temp = SensorModel(vessel.temp_sensor, dt_s, 0.0, rng, s.temp_c)
        self.do: SensorModel | None = None
        if vessel.liquid is not None:
            self.do = SensorModel(vessel.liquid.do_sensor, dt_s, 0.0, rng, s.do_um)
        self.plant = plant

    def read(self) -> Measured:
        s, plant = self.plant.state, self.plant
        do_pct = None
        lq = plant.vessel.liquid
        if self.do is not None and lq is not None:
            do_pct = plant.um_to_pct(self.do.sample(s.do_um), plant.henry(lq.henry_um_per_mmhg))
        if self.plain:
            o2, co2 = 100 * s.o2_frac, 100 * s.co2_frac
        else:  # the sensor's basis, converted once here (docs/physics.md §B6)
            o2 = plant.gas_reading(s.o2_frac, self.o2_basis)
            co2 = plant.gas_reading(s.co2_frac, self.co2_basis)
        return Measured(
            o2_pct=self.o2.sample(o2),
            co2_pct=self.co2.sample(co2),
            temp_c=self.temp.sample(s.temp_c),
            do_pct=do_pct,
        )


def run_twin(
    recipe: Recipe,
    vessel: Vessel,
    *,
    seed: int = 0,
    doors: list[DoorOpening] | None = None,
    record_every_s: float = 10.0,
    tuning: ControllerTuning | None = None,
    model: ProcessModel | None = None,
) -> TwinResult:
    """Run ``recipe`` on ``vessel`` to the end (or the time limit) and return what happened.

    Args:
        recipe: A recipe already checked with :func:`controller.core.recipe.check_feasible`.
        vessel: The plant's physics; the controller gets :meth:`Vessel.process_model`.
        seed: Seed for sensor noise (runs are reproducible bit for bit).
        doors: Door openings to inject.
        record_every_s: Period of the recorded time series, s (the summary uses every cycle).
        tuning: Optional controller gain overrides.
        model: What the controller believes about the vessel (default
            :meth:`Vessel.process_model`); give a wrong one for robustness runs while the plant
            keeps the true ``vessel``.
    """
    doors = sorted(doors or [], key=lambda d: d.at_s)
    vessel = with_recipe_growth(vessel, recipe)  # the recipe's [growth], if any (§B7)
    dt = vessel.control_period_s
    plant = Plant(vessel)
    sensors = _Sensors(vessel, plant, dt, random.Random(seed))
    controller = ReactorController(model or vessel.process_model(), tuning)
    engine = RecipeEngine(recipe)
    events = engine.start(0.0)
    controller.apply_phase(engine.phase)
    trace, rows = Trace(), []
    culture = vessel.culture is not None
    if culture:
        trace.cells_t_s.append(0.0)
        trace.cells_o2_pct.append(plant.pericellular_o2_pct())
    record_every = max(1, round(record_every_s / dt))
    limit_s = _time_limit_s(recipe)
    t, n = 0.0, 0
    measured = sensors.read()
    nan = float("nan")  # the per-cycle trace (what _trace did, bound once for speed)
    t_append, o2_append, o2_true_append = (
        trace.t_s.append,
        trace.o2_pct.append,
        trace.o2_true_pct.append,
    )
    phase_append, door_append = trace.phase.append, trace.door.append
    while not engine.finished and t < limit_s:
        act = controller.step(dt, measured, engine.pump_on)
        if doors:
            plant.door_open = any(d.at_s <= t < d.at_s + d.duration_s for d in doors)
        plant.advance(dt, act.n2_lpm, act.air_lpm, act.o2_lpm, act.co2_lpm, act.heater_w)
        n += 1
        t = n * dt
        measured = sensors.read()
        index = engine.index
        new = engine.step(t, dt, measured)
        for ev in new:
            if ev.kind == "harvest_due" and ev.detail["action"] == "confirm":
                new = [*new, *engine.confirm_harvest(ev.detail["name"], t, by="simulated operator")]
        events.extend(new)
        if engine.index != index:
            controller.apply_phase(engine.phase)
        t_append(t)
        o2_append(measured.o2_pct if measured.o2_pct is not None else nan)
        o2_true_append(100.0 * plant.state.o2_frac)
        phase_append(engine.index)
        door_append(1 if plant.door_open else 0)
        if culture and plant.culture_sampled:
            trace.cells_t_s.append(t)
            trace.cells_o2_pct.append(plant.pericellular_o2_pct())
        if n % record_every == 0 or new:
            rows.append(_row(t, engine, controller, measured, plant))
    return TwinResult(
        recipe, vessel, seed, list(doors), rows, events, engine, plant, trace, t, engine.finished
    )


def _row(
    t: float, engine: RecipeEngine, ctl: ReactorController, m: Measured, plant: Plant
) -> tuple[Any, ...]:
    phase = engine.phase
    s = plant.state
    f = s.flows
    nan = float("nan")
    o2_sp = co2_sp = temp_sp = do_sp = nan
    if phase is not None:
        if phase.o2_basis == "dissolved":
            do_sp = phase.o2_pct if phase.o2_pct is not None else nan
            o2_sp = 100.0 * (ctl.o2.ref.target or 0.0)
        else:
            o2_sp = phase.o2_pct if phase.o2_pct is not None else nan
        co2_sp = phase.co2_pct if phase.co2_pct is not None else nan
        temp_sp = phase.temp_c if phase.temp_c is not None else nan
    peri = plant.pericellular_o2_pct()
    return (
        round(t, 3),
        phase.name if phase else "",
        o2_sp,
        m.o2_pct,
        100.0 * s.o2_frac,
        peri,
        do_sp,
        m.do_pct if m.do_pct is not None else nan,
        co2_sp,
        m.co2_pct,
        temp_sp,
        m.temp_c,
        f.n2_lpm,
        f.air_lpm,
        f.o2_lpm,
        f.co2_lpm,
        ctl.temp.heater_w,
        ctl.o2_mode.value,
        engine.clock.exposure_s if engine.clock else 0.0,
        int(plant.door_open),
    )
