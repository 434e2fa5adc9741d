"""The digital twin as a :class:`controller.engineering.autotune.TuningPlant`, and autotuning on it.

:class:`TwinTuningPlant` is the plant + sensors of :mod:`simulators.twin` without a recipe: the
autotune session decides the commands, :meth:`TwinTuningPlant.apply` advances the physics one
control period and samples the sensors once. :func:`autotune_on_twin` runs a whole session and
:func:`verify_on_twin` checks proposed gains against targets T1, T2, T4 on a short hold recipe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from controller.core.process import ProcessModel
from controller.core.reactor import Actuation, ControllerTuning
from controller.core.recipe import Harvest, Phase, PhaseEnd, Recipe
from controller.core.recipe_engine import Measured
from controller.engineering.autotune import LOOP_NAMES, AutotuneSession, LoopName, run_autotune
from simulators.plant import Plant
from simulators.summary import o2_metrics
from simulators.twin import _Sensors, run_twin
from simulators.vessel import Vessel

MAX_TUNE_S = 12 * 3600.0
"""Simulated-time limit of one autotune session on the twin, s."""


class TwinTuningPlant:
    """Plant physics and sensor models of ``vessel``, stepped by :meth:`apply`.

    Args:
        vessel: The plant's truth.
        seed: Seed of the sensor noise.
    """

    def __init__(self, vessel: Vessel, seed: int = 0) -> None:
        self.vessel = vessel
        self.plant = Plant(vessel)
        self._sensors = _Sensors(vessel, self.plant, vessel.control_period_s, random.Random(seed))
        self._reading = self._sensors.read()
        self.t_s = 0.0

    @property
    def control_period_s(self) -> float:
        """Control period of the vessel, s."""
        return self.vessel.control_period_s

    def read(self) -> Measured:
        """The readings sampled at the end of the last period."""
        return self._reading

    def apply(self, actuation: Actuation) -> None:
        """Advance the plant one period with these commands, then sample the sensors."""
        a, dt = actuation, self.control_period_s
        self.plant.advance(dt, a.n2_lpm, a.air_lpm, a.o2_lpm, a.co2_lpm, a.heater_w)
        self._reading = self._sensors.read()
        self.t_s += dt


def operating_phase(o2_pct: float, co2_pct: float, temp_c: float) -> Phase:
    """The phase whose set points the loops are tuned around."""
    return Phase(name="autotune", o2_pct=o2_pct, co2_pct=co2_pct, temp_c=temp_c, duration_h=24.0)


def autotune_on_twin(
    vessel: Vessel,
    phase: Phase,
    *,
    tuning: ControllerTuning | None = None,
    loops: Sequence[LoopName] = LOOP_NAMES,
    seed: int = 0,
    model: ProcessModel | None = None,
) -> AutotuneSession:
    """Relay-tune ``loops`` of ``vessel``'s controller on the twin, starting from ``tuning``.

    Args:
        vessel: Plant truth.
        phase: Operating point (see :func:`operating_phase`).
        tuning: Starting gains (default: the model-derived defaults).
        loops: Loops to tune, in order.
        seed: Sensor-noise seed.
        model: The controller's model (default: the vessel's nominal model).
    """
    plant = TwinTuningPlant(vessel, seed)
    session = AutotuneSession(model or vessel.process_model(), phase, tuning, loops)
    steps = round(MAX_TUNE_S / vessel.control_period_s)
    return run_autotune(plant, session, steps)


def hold_recipe(
    o2_pct: float,
    hold_h: float = 3.0,
    *,
    band_pct: float = 0.2,
    harvests: tuple[float, ...] = (),
    co2_pct: float | None = 5.0,
    until: str = "time",
) -> Recipe:
    """15 min CO2 equilibration, then a fastest O2 move into a hold of ``hold_h`` hours.

    ``harvests`` are at-exposure times (h) of harvests in the hold; ``until`` its end condition.
    """
    return Recipe(
        name=f"{o2_pct:g} % hold",
        phases=[
            Phase(name="equilibrate", co2_pct=co2_pct, duration_h=0.25),
            Phase(
                name="hold",
                o2_pct=o2_pct,
                o2_band_pct=band_pct,
                co2_pct=co2_pct,
                duration_h=hold_h,
                until=PhaseEnd(until),
                harvests=[Harvest(name=f"H{i}", at_exposure_h=h) for i, h in enumerate(harvests)],
            ),
        ],
    )


def verify_on_twin(
    vessel: Vessel,
    tuning: ControllerTuning,
    o2_pct: float,
    *,
    hold_h: float = 2.0,
    seed: int = 0,
    model: ProcessModel | None = None,
) -> dict[str, Any]:
    """Summary ``o2`` block of a fastest descent to ``o2_pct`` and a hold run with ``tuning``.

    Adds ``ratio_limit`` = 1.2 + 2 theta_eff / t_bb, the T1 limit of ``ratio``.
    """
    result = run_twin(hold_recipe(o2_pct, hold_h), vessel, seed=seed, tuning=tuning, model=model)
    o2 = o2_metrics(result)
    t_bb = o2.get("bang_bang_min_s")
    theta = vessel.process_model().o2_dead_time_s
    o2["ratio_limit"] = 1.2 + 2.0 * theta / t_bb if t_bb else None
    return o2
