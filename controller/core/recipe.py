"""Recipes: validated TOML descriptions of preconditioning protocols (docs/recipes.md).

A recipe is an ordered list of phases (ISA-88 procedure -> phase). Each phase sets O2, CO2 and
temperature targets with a ramp, an in-spec band, a length and an end condition, and may hold
harvests timed by *in-spec exposure*: "harvest at 24 h of 2 % +/- 0.2 %" means 24 h spent inside
the band, not 24 h of wall time.

Two layers of checks: the schema (types, ranges, unknown keys, consistency inside the file) and
:func:`check_feasible`, which compares the recipe with what a given vessel can physically do.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config_errors import ConfigError, ConfigErrorList
from controller.core.process import (
    X_AIR_O2,
    ProcessModel,
    ascent_time_s,
    co2_ratio_lpm,
    leak_floor_frac,
)

FASTEST: Final = "fastest"
CONTROL_MARGIN = 0.05
"""A set point must sit this fraction above the vessel's leak floor, so control keeps authority."""


class PhaseEnd(StrEnum):
    """How a phase's ``duration_h`` counts."""

    TIME = "time"
    """Wall time since the phase started."""
    EXPOSURE = "exposure"
    """In-spec exposure: time with O2 (or DO) inside the phase's band."""
    IN_SPEC = "in_spec"
    """Ends once every controlled variable is inside its band; ``duration_h`` is the time-out."""


class HarvestAction(StrEnum):
    """What a harvest does when it falls due."""

    CONFIRM = "confirm"
    """An operator collects the conditioned medium and confirms it."""
    PUMP = "pump"
    """The harvest pump runs ``volume_ml`` at ``flow_ml_per_min``."""


class Harvest(BaseModel):
    """A conditioned-medium harvest, timed by in-spec exposure within its phase.

    Attributes:
        name: Label of the harvest (unique within the recipe).
        at_exposure_h: In-spec exposure of the phase at which it falls due, h (> 0).
        latest_h: Optional latest wall time since the phase started, h: the harvest happens then
            even if exposure is short, and is flagged.
        action: ``confirm`` (operator) or ``pump``.
        volume_ml / flow_ml_per_min: Pump volume (mL) and flow (mL/min), for ``pump`` only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    at_exposure_h: float = Field(gt=0, le=24 * 60)
    latest_h: float | None = Field(default=None, gt=0, le=24 * 60)
    action: HarvestAction = HarvestAction.CONFIRM
    volume_ml: float | None = Field(default=None, gt=0, le=100_000)
    flow_ml_per_min: float | None = Field(default=None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.action is HarvestAction.PUMP and (
            self.volume_ml is None or self.flow_ml_per_min is None
        ):
            msg = "a pump harvest needs volume_ml and flow_ml_per_min"
            raise ValueError(msg)
        if self.latest_h is not None and self.latest_h < self.at_exposure_h:
            msg = (
                f"latest_h {self.latest_h} h is before at_exposure_h {self.at_exposure_h} h: "
                "exposure can never be reached in time (allowed: latest_h >= at_exposure_h)"
            )
            raise ValueError(msg)
        return self

    @property
    def pump_duration_s(self) -> float:
        """How long the pump runs, s (0 for operator harvests)."""
        if self.volume_ml is None or self.flow_ml_per_min is None:
            return 0.0
        return 60.0 * self.volume_ml / self.flow_ml_per_min


Ramp = float | Literal["fastest"]


class Phase(BaseModel):
    """One phase of a recipe. Targets left out are not controlled in that phase.

    Attributes:
        name: Phase name, e.g. "equilibrate", "hypoxic hold" (unique within the recipe).
        o2_pct: O2 set point, % (0-100), or omitted (O2 uncontrolled, N2 and air closed).
        o2_basis: ``gas`` (headspace O2) or ``dissolved`` (dissolved O2 as % of 760 mmHg
            equivalent, bioreactors; controlled by a DO -> headspace cascade).
        o2_ramp_pct_per_min: Ramp rate to the set point, %/min, or "fastest" (time-optimal).
        o2_band_pct: In-spec band, +/- % abs (0.01-5).
        co2_pct / co2_ramp_pct_per_min / co2_band_pct: The same for CO2 (0-20 %).
        temp_c / temp_ramp_c_per_min / temp_band_c: The same for temperature (4-45 degC).
        duration_h: Phase length, h; how it counts is ``until``.
        until: ``time``, ``exposure`` or ``in_spec`` (see :class:`PhaseEnd`).
        max_duration_h: For ``exposure`` phases, a wall-time cap, h.
        harvests: Harvests timed by this phase's exposure clock.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    o2_pct: float | None = Field(default=None, ge=0, le=100)
    o2_basis: Literal["gas", "dissolved"] = "gas"
    o2_ramp_pct_per_min: Ramp = FASTEST
    o2_band_pct: float = Field(default=0.1, gt=0, le=5)
    co2_pct: float | None = Field(default=None, ge=0, le=20)
    co2_ramp_pct_per_min: Ramp = FASTEST
    co2_band_pct: float = Field(default=0.3, gt=0, le=5)
    temp_c: float | None = Field(default=None, ge=4, le=45)
    temp_ramp_c_per_min: Ramp = FASTEST
    temp_band_c: float = Field(default=0.5, gt=0, le=5)
    duration_h: float = Field(gt=0, le=24 * 60)
    until: PhaseEnd = PhaseEnd.TIME
    max_duration_h: float | None = Field(default=None, gt=0, le=24 * 60)
    harvests: list[Harvest] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for field in ("o2_ramp_pct_per_min", "co2_ramp_pct_per_min", "temp_ramp_c_per_min"):
            value = getattr(self, field)
            if not isinstance(value, str) and not (0 < value <= 1000):
                msg = f'{field} is {value}; allowed: a rate > 0 and <= 1000, or "fastest"'
                raise ValueError(msg)
        if self.until is PhaseEnd.EXPOSURE and self.o2_pct is None:
            msg = 'until = "exposure" needs an O2 set point: exposure never accrues without one'
            raise ValueError(msg)
        if self.harvests and self.o2_pct is None:
            msg = "harvests need an O2 set point and band: exposure never accrues without one"
            raise ValueError(msg)
        if self.max_duration_h is not None and self.max_duration_h < self.duration_h:
            msg = (
                f"max_duration_h {self.max_duration_h} h is shorter than duration_h "
                f"{self.duration_h} h (allowed: max_duration_h >= duration_h)"
            )
            raise ValueError(msg)
        last = 0.0
        for i, harvest in enumerate(self.harvests):
            if harvest.at_exposure_h > self.duration_h:
                msg = (
                    f"harvests[{i}] ({harvest.name}) at {harvest.at_exposure_h} h of exposure "
                    f"can never be reached: the phase ends at {self.duration_h} h "
                    f"(allowed: at_exposure_h <= duration_h)"
                )
                raise ValueError(msg)
            if harvest.at_exposure_h <= last:
                msg = f"harvests[{i}] ({harvest.name}): at_exposure_h must increase within a phase"
                raise ValueError(msg)
            last = harvest.at_exposure_h
        return self

    @property
    def o2_frac(self) -> float | None:
        """O2 set point as a fraction (0..1), or ``None``."""
        return None if self.o2_pct is None else self.o2_pct / 100.0


class Growth(BaseModel):
    """How the cells grow over the run (docs/recipes.md, ``[growth]``; docs/physics.md §B7).

    dX/dt = r X, or the logistic r X (1 - X/K) with a cap K. It overrides the vessel's (twin) or
    the site culture's (service) growth, so the cells' O2 uptake rises across a multi-day protocol.

    Attributes:
        rate_per_day: Growth rate r, 1/day (-2 to 5; ln 2 / doubling time in days).
        max_cells_per_cm2: Cap K of a static culture (cells on a surface), cells/cm^2.
        max_cells_per_ml: Cap K of a stirred culture (cells in the medium), cells/mL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_per_day: float = Field(ge=-2, le=5)
    max_cells_per_cm2: float | None = Field(default=None, gt=0, le=1e7)
    max_cells_per_ml: float | None = Field(default=None, gt=0, le=1e9)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        capped = self.max_cells_per_cm2 is not None or self.max_cells_per_ml is not None
        if capped and self.rate_per_day <= 0:
            msg = (
                f"a density cap needs a positive rate_per_day (got {self.rate_per_day:g}): "
                "a culture that does not grow never reaches its cap (allowed: rate_per_day > 0 "
                "with a cap, or no cap)"
            )
            raise ValueError(msg)
        return self


class Recipe(BaseModel):
    """A preconditioning protocol: a name, its ordered phases and optionally how cells grow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    growth: Growth | None = None
    phases: list[Phase] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names = [p.name for p in self.phases]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            msg = f"phase names must be unique; repeated: {', '.join(sorted(dup))}"
            raise ValueError(msg)
        harvest_names = [h.name for p in self.phases for h in p.harvests]
        dup = {n for n in harvest_names if harvest_names.count(n) > 1}
        if dup:
            msg = f"harvest names must be unique; repeated: {', '.join(sorted(dup))}"
            raise ValueError(msg)
        return self


def _rate_or_none(ramp: Ramp) -> float | None:
    return None if isinstance(ramp, str) else float(ramp)


def check_feasible(recipe: Recipe, model: ProcessModel, source: str, vessel: str) -> None:
    """Raise :class:`ConfigError` for anything ``vessel`` cannot physically do.

    Checked per phase: O2 set point above the vessel's leak floor and reachable upward; ramps
    no faster than the actuators can follow at the hardest point of the ramp; CO2 holdable
    during a full N2 purge; temperature within heater power; dissolved-O2 phases only on a
    vessel with a liquid model; time-bounded phases long enough to ever reach their band.
    """
    errors: list[ConfigError] = []
    x_prev = X_AIR_O2
    for i, phase in enumerate(recipe.phases):
        where = f"phases[{i}]"
        errors.extend(_check_phase(phase, where, model, source, vessel, x_prev))
        if phase.o2_pct is not None and phase.o2_basis == "gas":
            x_prev = phase.o2_pct / 100.0
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrorList(errors)


def check_growth(
    recipe: Recipe,
    cells_per_cm2: float | None,
    cells_per_ml: float | None,
    source: str,
    vessel: str,
) -> None:
    """Raise :class:`ConfigError` when the recipe's growth cap is below the starting density.

    Args:
        recipe: The recipe (nothing to check without ``[growth]``).
        cells_per_cm2: Starting density of the vessel's static culture, cells/cm^2, or ``None``.
        cells_per_ml: Starting density of its stirred culture, cells/mL, or ``None``.
        source: File or command the recipe came from (for the message).
        vessel: The vessel or reactor it runs on (for the message).
    """
    growth = recipe.growth
    if growth is None:
        return
    for field, cap, start, unit in (
        ("max_cells_per_cm2", growth.max_cells_per_cm2, cells_per_cm2, "cells/cm^2"),
        ("max_cells_per_ml", growth.max_cells_per_ml, cells_per_ml, "cells/mL"),
    ):
        if cap is not None and start is not None and cap < start:
            raise ConfigError(
                source,
                f"growth.{field}",
                f"{cap:g} {unit} is below the starting density {start:g} {unit} of {vessel} "
                f"(allowed: >= {start:g})",
            )


def _check_phase(
    phase: Phase, where: str, model: ProcessModel, source: str, vessel: str, x_prev: float
) -> list[ConfigError]:
    errs: list[ConfigError] = []
    co2 = (phase.co2_pct or 0.0) / 100.0
    if phase.o2_basis == "dissolved" and model.liquid is None:
        errs.append(
            ConfigError(
                source,
                f"{where}.o2_basis",
                f"'dissolved' needs a vessel with a liquid (DO) model; "
                f"{vessel} has none (allowed: 'gas')",
            )
        )
    if phase.o2_pct is not None and phase.o2_basis == "gas":
        x_sp = phase.o2_pct / 100.0
        floor = leak_floor_frac(model, co2)
        lowest = floor * (1.0 + CONTROL_MARGIN)
        if x_sp <= lowest:
            errs.append(
                ConfigError(
                    source,
                    f"{where}.o2_pct",
                    f"{phase.o2_pct} % cannot be held in {vessel}: full N2 "
                    f"({model.n2_max_lpm} L/min) against its leak ({model.leak_lpm} L/min) "
                    f"bottoms out at {100 * floor:.3f} % (allowed: o2_pct > {100 * lowest:.3f}, "
                    f"which keeps {100 * CONTROL_MARGIN:.0f} % control margin)",
                )
            )
        up_limit = X_AIR_O2 if model.o2_max_lpm <= 0 else 1.0
        if x_sp > up_limit + 1e-9:
            errs.append(
                ConfigError(
                    source,
                    f"{where}.o2_pct",
                    f"{phase.o2_pct} % needs an O2 supply; {vessel} has none "
                    f"(allowed: <= {100 * X_AIR_O2:.2f})",
                )
            )
        errs.extend(_check_o2_ramp(phase, where, model, source, vessel, x_prev, x_sp, co2))
    if phase.co2_pct is not None:
        need = co2_ratio_lpm(co2, model.n2_max_lpm, model.leak_lpm)
        if need > model.co2_max_lpm * 1.0001:
            errs.append(
                ConfigError(
                    source,
                    f"{where}.co2_pct",
                    f"holding {phase.co2_pct} % during a full N2 purge needs {need:.2f} L/min CO2; "
                    f"{vessel}'s CO2 supply gives {model.co2_max_lpm} L/min",
                )
            )
    if phase.temp_c is not None:
        ceiling = model.room_temp_c + model.heater_max_w / model.ua_w_per_k
        if phase.temp_c > ceiling:
            errs.append(
                ConfigError(
                    source,
                    f"{where}.temp_c",
                    f"{phase.temp_c} degC is above what {vessel}'s heater can hold "
                    f"(allowed: <= {ceiling:.1f} at {model.room_temp_c} degC room)",
                )
            )
    return errs


def _check_o2_ramp(
    phase: Phase,
    where: str,
    model: ProcessModel,
    source: str,
    vessel: str,
    x_prev: float,
    x_sp: float,
    co2: float,
) -> list[ConfigError]:
    errs: list[ConfigError] = []
    rate_pct = _rate_or_none(phase.o2_ramp_pct_per_min)
    field = f"{where}.o2_ramp_pct_per_min"
    v = model.volume_l
    if rate_pct is not None:
        r = rate_pct / 100.0  # fraction per min
        if x_sp < x_prev:
            # hardest at the bottom: N2 needed = (Q_L (x_a - x) + V r) / x - Q_C
            q_c = co2_ratio_lpm(co2, model.n2_max_lpm, model.leak_lpm)
            need = (model.leak_lpm * (X_AIR_O2 - x_sp) + v * r) / x_sp - q_c
            if need > model.n2_max_lpm:
                top = (model.n2_max_lpm + q_c) * x_sp - model.leak_lpm * (X_AIR_O2 - x_sp)
                errs.append(
                    ConfigError(
                        source,
                        field,
                        f"{rate_pct} %/min down to {phase.o2_pct} % needs {need:.1f} L/min N2; "
                        f"{vessel} has {model.n2_max_lpm} (allowed: <= {100 * max(top, 0) / v:.3f} "
                        f'%/min, or "fastest")',
                    )
                )
        elif x_sp > x_prev:
            lift = model.air_max_lpm * (X_AIR_O2 - x_sp) + model.o2_max_lpm * (1 - x_sp)
            lift += model.leak_lpm * (X_AIR_O2 - x_sp)
            if v * r > lift:
                errs.append(
                    ConfigError(
                        source,
                        field,
                        f"{rate_pct} %/min up to {phase.o2_pct} % is faster than {vessel}'s air/O2 "
                        f"supply can follow (allowed: <= {100 * max(lift, 0) / v:.3f} %/min)",
                    )
                )
    if phase.until is not PhaseEnd.EXPOSURE and x_sp > x_prev:
        t_up = ascent_time_s(
            v,
            model.air_max_lpm,
            model.o2_max_lpm,
            model.leak_lpm,
            x_prev,
            x_sp - phase.o2_band_pct / 100.0,
        )
        if not math.isfinite(t_up) or t_up > phase.duration_h * 3600.0:
            errs.append(
                ConfigError(
                    source,
                    f"{where}.duration_h",
                    f"{phase.duration_h} h ({phase.until.value}) is too short for {vessel} "
                    f"to raise O2 from "
                    f"{100 * x_prev:.2f} % into {phase.o2_pct} +/- {phase.o2_band_pct} % "
                    f"(needs {t_up / 3600.0:.2f} h at full air/O2; allowed: a longer duration_h, "
                    f"a lower o2_pct, or a vessel with an air or O2 supply)",
                )
            )
    return errs
