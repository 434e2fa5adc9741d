"""Vessel files: the physical parameters of a chamber or bioreactor (docs/physics.md §E).

A vessel file is TOML validated by :class:`Vessel`. The reference vessels ship inside this package
(``simulators/vessels/*.toml``); a user-defined vessel is any file with the same schema.
:meth:`Vessel.process_model` gives the controller its nominal view of the vessel.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.config_errors import ConfigError, load_toml_model, validate_model
from controller.core.pericellular import CultureAtmosphere, CultureModel
from controller.core.process import LiquidModel, ProcessModel
from controller.core.recipe import Recipe, check_growth


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GasSection(_Strict):
    """Headspace gas: volume, leak, supplies and how they are dosed."""

    volume_l: float = Field(gt=0, le=10_000, description="controlled gas volume, L")
    leak_lpm: float = Field(ge=0, le=50, description="leak exchange with room air, L/min")
    n2_max_lpm: float = Field(gt=0, le=1000)
    air_max_lpm: float = Field(default=0.0, ge=0, le=1000)
    o2_max_lpm: float = Field(default=0.0, ge=0, le=1000)
    co2_max_lpm: float = Field(gt=0, le=1000)
    min_through_flow_lpm: float = Field(default=0.0, ge=0, le=1000)
    actuator: Literal["mfc", "solenoid"] = "mfc"
    mfc_tau_s: float = Field(default=0.5, ge=0, le=60, description="MFC first-order lag, s")
    pwm_period_s: float = Field(default=2.0, gt=0, le=60, description="solenoid PWM period, s")
    min_on_s: float = Field(default=0.05, ge=0, le=10, description="solenoid minimum on-time, s")
    transport_delay_s: float = Field(default=5.0, ge=0, le=300)
    door_tau_s: float = Field(default=10.0, gt=0, le=600, description="door exchange time, s")
    door_exchange_frac: float = Field(default=1.0, gt=0, le=1, description="volume share exposed")


class SensorSection(_Strict):
    """A gas or temperature sensor: lag, noise, drift and resolution."""

    t63_s: float = Field(ge=0, le=600)
    noise_sd: float = Field(default=0.0, ge=0, le=10, description="1-sigma noise, sensor units")
    drift_per_week: float = Field(default=0.0, ge=-10, le=10, description="sensor units/week")
    resolution: float = Field(default=0.0, ge=0, le=10, description="quantisation step")
    bias: float = Field(default=0.0, ge=-10, le=10, description="fixed offset, sensor units")
    drift_frac_per_week: float = Field(
        default=0.0, ge=-0.5, le=0.5, description="gain drift, share of the reading per week"
    )
    basis: Literal["dry_pct", "wet_pct", "pp_pct"] = Field(
        default="dry_pct",
        description="gas sensors: % of dry gas, % of humid gas at the site pressure, or partial"
        " pressure as % of 760 mmHg (docs/physics.md §B6)",
    )


class ThermalSection(_Strict):
    """Single-node heat balance C dT/dt = P - UA (T - T_room)."""

    heat_capacity_j_per_k: float = Field(gt=0, le=1e8)
    ua_w_per_k: float = Field(gt=0, le=1e5)
    heater_max_w: float = Field(gt=0, le=1e6)
    room_temp_c: float = Field(default=21.0, ge=-10, le=45)
    door_ua_w_per_k: float = Field(default=150.0, ge=0, le=1e5, description="extra loss, door open")


class LiquidSection(_Strict):
    """Stirred medium under a gas overlay (bioreactor): DO balance with Michaelis-Menten uptake."""

    volume_l: float = Field(gt=0, le=10_000)
    kla_per_h: float = Field(gt=0, le=100)
    henry_um_per_mmhg: float = Field(default=1.26, gt=0, le=10)
    cells_per_ml: float = Field(ge=0, le=1e9)
    growth_per_day: float = Field(default=0.0, ge=-2, le=5, description="exponential rate, 1/day")
    max_cells_per_ml: float | None = Field(default=None, gt=0, le=1e9, description="logistic cap")
    qo2_amol_per_cell_s: float = Field(default=27.0, ge=0, le=1000)
    km_um: float = Field(default=2.0, gt=0, le=100)
    do_sensor: SensorSection = SensorSection(t63_s=30.0, noise_sd=0.3)


class CultureSection(_Strict):
    """Static culture in vessels inside the chamber: medium lag and pericellular O2 estimate."""

    depth_mm: float = Field(default=2.0, gt=0, le=50)
    cells_per_cm2: float = Field(default=2.5e4, ge=0, le=1e7)
    ocr_amol_per_cell_s: float = Field(default=27.0, ge=0, le=1000)
    km_um: float = Field(default=2.0, gt=0, le=100)
    tau_medium_min: float = Field(default=9.0, gt=0, le=1000, description="vessel/medium lag")
    henry_um_per_mmhg: float = Field(default=1.26, gt=0, le=10)
    model: Literal["lag", "diffusion"] = Field(
        default="lag",
        description="lag: medium follows the chamber with tau_medium_min and a steady diffusion"
        " drop; diffusion: 1-D diffusion-reaction through the medium (docs/physics.md §B7)",
    )
    nodes: int = Field(default=8, ge=2, le=64, description="diffusion model: intervals")
    diffusion_step_s: float = Field(default=5.0, gt=0, le=60, description="diffusion time step, s")
    vent_tau_min: float = Field(
        default=0.0, ge=0, le=1000, description="diffusion model: lid/vent lag, 0 = open well"
    )
    diffusivity_m2_s: float = Field(default=3.0e-9, gt=0, le=1e-7, description="O2 at 37 degC")
    growth_per_day: float = Field(default=0.0, ge=-2, le=5, description="exponential rate, 1/day")
    max_cells_per_cm2: float | None = Field(default=None, gt=0, le=1e7, description="logistic cap")


class AtmosphereSection(_Strict):
    """Site pressure, chamber humidity and temperature dependence (docs/physics.md §B6).

    Without this section the plant keeps the legacy convention: dry gas at 760 mmHg and every
    coefficient at its 37 degC value.
    """

    barometric_mmhg: float = Field(default=760.0, ge=400, le=800, description="site pressure")
    humidity_frac: float = Field(default=0.0, ge=0, le=1, description="relative humidity 0..1")
    temperature_dependent: bool = Field(
        default=False, description="solubility, kLa, uptake and diffusivity follow the medium T"
    )
    salinity: float = Field(default=0.0, ge=0, le=40, description="practical salinity of medium")
    uptake_q10: float = Field(default=2.0, gt=0, le=5)
    kla_theta: float = Field(default=1.024, gt=0.9, le=1.1)


class InitialSection(_Strict):
    """State at the start of a simulation."""

    o2_pct: float = Field(default=20.9, ge=0, le=100)
    co2_pct: float = Field(default=0.04, ge=0, le=20)
    temp_c: float | None = Field(default=None, ge=-10, le=60, description="default: room")


class Vessel(_Strict):
    """A vessel's physics (the plant's truth); the controller gets :meth:`process_model`."""

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    control_period_s: float = Field(default=1.0, gt=0, le=60)
    gas: GasSection
    o2_sensor: SensorSection
    co2_sensor: SensorSection
    temp_sensor: SensorSection
    thermal: ThermalSection
    liquid: LiquidSection | None = None
    culture: CultureSection | None = None
    atmosphere: AtmosphereSection | None = None
    initial: InitialSection = InitialSection()

    def process_model(self) -> ProcessModel:
        """The controller's nominal model of this vessel (what a site file would state)."""
        g, th = self.gas, self.thermal
        liquid = None
        if self.liquid is not None:
            lq = self.liquid
            our_um_per_h = lq.cells_per_ml * 1e3 * lq.qo2_amol_per_cell_s * 1e-18 * 1e6 * 3600
            liquid = LiquidModel(
                kla_per_h=lq.kla_per_h,
                henry_um_per_mmhg=lq.henry_um_per_mmhg,
                our_um_per_h=our_um_per_h,
                do_sensor_t63_s=lq.do_sensor.t63_s,
            )
        return ProcessModel(
            volume_l=g.volume_l,
            leak_lpm=g.leak_lpm,
            n2_max_lpm=g.n2_max_lpm,
            air_max_lpm=g.air_max_lpm,
            o2_max_lpm=g.o2_max_lpm,
            co2_max_lpm=g.co2_max_lpm,
            min_through_flow_lpm=g.min_through_flow_lpm,
            transport_delay_s=g.transport_delay_s,
            o2_sensor_t63_s=self.o2_sensor.t63_s,
            co2_sensor_t63_s=self.co2_sensor.t63_s,
            temp_sensor_t63_s=self.temp_sensor.t63_s,
            heat_capacity_j_per_k=th.heat_capacity_j_per_k,
            ua_w_per_k=th.ua_w_per_k,
            heater_max_w=th.heater_max_w,
            room_temp_c=th.room_temp_c,
            control_period_s=self.control_period_s,
            liquid=liquid,
        )

    def culture_model(self) -> CultureModel | None:
        """The static culture as the core's pericellular estimator takes it (diffusion model).

        The same numbers a site file's ``[reactors.culture]`` states for a real reactor; the
        O2 basis is the vessel's O2 sensor's. ``None`` without a ``[culture]`` section.
        """
        cu, atm = self.culture, self.atmosphere
        if cu is None:
            return None
        return CultureModel(
            depth_mm=cu.depth_mm,
            cells_per_cm2=cu.cells_per_cm2,
            ocr_amol_per_cell_s=cu.ocr_amol_per_cell_s,
            km_um=cu.km_um,
            henry_um_per_mmhg=cu.henry_um_per_mmhg,
            diffusivity_m2_s=cu.diffusivity_m2_s,
            nodes=cu.nodes,
            step_s=cu.diffusion_step_s,
            vent_tau_min=cu.vent_tau_min,
            growth_per_day=cu.growth_per_day,
            max_cells_per_cm2=cu.max_cells_per_cm2,
            o2_basis=self.o2_sensor.basis,
            atmosphere=None
            if atm is None
            else CultureAtmosphere(
                barometric_mmhg=atm.barometric_mmhg,
                humidity_frac=atm.humidity_frac,
                temperature_dependent=atm.temperature_dependent,
                salinity=atm.salinity,
                uptake_q10=atm.uptake_q10,
            ),
        )


def with_recipe_growth(vessel: Vessel, recipe: Recipe, source: str = "recipe") -> Vessel:
    """The vessel whose cells grow as the recipe's ``[growth]`` says (unchanged without one).

    The rate replaces the vessel's ``growth_per_day`` of its culture and liquid; a cap replaces
    the matching ``max_cells_per_*``. Raises :class:`ConfigError` for a cap below the vessel's
    starting density.
    """
    growth = recipe.growth
    if growth is None:
        return vessel
    cu, lq = vessel.culture, vessel.liquid
    check_growth(
        recipe,
        cu.cells_per_cm2 if cu is not None else None,
        lq.cells_per_ml if lq is not None else None,
        source,
        vessel.name,
    )
    update: dict[str, object] = {}
    if cu is not None:
        cap = growth.max_cells_per_cm2
        update["culture"] = cu.model_copy(
            update={"growth_per_day": growth.rate_per_day, "max_cells_per_cm2": cap}
        )
    if lq is not None:
        cap = growth.max_cells_per_ml
        update["liquid"] = lq.model_copy(
            update={"growth_per_day": growth.rate_per_day, "max_cells_per_ml": cap}
        )
    return vessel.model_copy(update=update)


def reference_vessel_names() -> list[str]:
    """Names of the vessels shipped with the package."""
    files = resources.files("simulators.vessels")
    return sorted(p.name.removesuffix(".toml") for p in files.iterdir() if p.name.endswith(".toml"))


def load_vessel(name_or_path: str) -> Vessel:
    """Load a reference vessel by name, or a vessel file by path; raise :class:`ConfigError`."""
    if name_or_path in reference_vessel_names():
        text = resources.files("simulators.vessels").joinpath(f"{name_or_path}.toml").read_text()
        return validate_model(f"<reference vessel {name_or_path}>", tomllib.loads(text), Vessel)
    path = Path(name_or_path)
    if not path.exists():
        names = ", ".join(reference_vessel_names())
        raise ConfigError(
            "--vessel",
            "",
            f"'{name_or_path}' is neither a reference vessel ({names}) nor an existing vessel file",
        )
    return load_toml_model(path, Vessel)
