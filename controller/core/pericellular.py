"""Pericellular O2: what the cells see under a static medium layer (docs/physics.md §B7).

The diffusion-reaction solver is :class:`~controller.core.medium_layer.MediumLayer` (re-exported
here); this module holds the site's culture model and :class:`PericellularEstimator`, which runs
that solver in the service from measured headspace O2, temperature and pressure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.core import gas_liquid
from controller.core.medium_layer import (
    MediumLayer,
    slowest_time_constant_s,
    steady_cell_um,
    step_response_cell,
)

__all__ = [
    "HOLD_UNTRUSTED_S",
    "MBAR_PER_MMHG",
    "MMHG_PER_ATM",
    "CultureAtmosphere",
    "CultureModel",
    "GasBasis",
    "MediumLayer",
    "PericellularEstimator",
    "grow",
    "slowest_time_constant_s",
    "steady_cell_um",
    "step_response_cell",
]

MMHG_PER_ATM = 760.0
"""The "%-equivalent" convention: pO2 as % of 760 mmHg (docs/physics.md §0)."""
MBAR_PER_MMHG = 1.333224
"""mbar (hPa) per mmHg."""
HOLD_UNTRUSTED_S = 60.0
"""How long the estimator carries on with the last trusted headspace O2, s; after that its
estimate is reported as untrusted (``None``) until a trusted reading returns."""

GasBasis = Literal["dry_pct", "wet_pct", "pp_pct"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CultureAtmosphere(_Strict):
    """Site pressure, chamber humidity and temperature dependence (docs/physics.md §B6).

    Attributes:
        barometric_mmhg: Site pressure, mmHg (400-800); a barometer reading replaces it.
        humidity_frac: Relative humidity of the chamber gas, 0..1.
        temperature_dependent: Henry coefficient, uptake and diffusivity follow the temperature.
        salinity: Practical salinity of the medium (0-40; 0 keeps the 37 degC medium factor).
        uptake_q10: Q10 of the cells' O2 uptake (assumption, §B6).
    """

    barometric_mmhg: float = Field(default=760.0, ge=400, le=800)
    humidity_frac: float = Field(default=0.0, ge=0, le=1)
    temperature_dependent: bool = False
    salinity: float = Field(default=0.0, ge=0, le=40)
    uptake_q10: float = Field(default=2.0, gt=0, le=5)


class CultureModel(_Strict):
    """A static culture (cells on the bottom of a medium layer) inside a gas-controlled chamber.

    The parameters of docs/physics.md §B7, in the units of the vessel files' ``[culture]``; the
    site file gives one per reactor as ``[reactors.culture]`` so the service estimates what the
    cells see. Without ``atmosphere`` the legacy convention holds: dry gas at 760 mmHg and every
    coefficient at 37 degC.

    Attributes:
        depth_mm: Medium depth over the cells, mm (0-50).
        cells_per_cm2: Cell density at the start of a run, cells/cm^2 (0-1e7).
        ocr_amol_per_cell_s: O2 uptake per cell at 37 degC, amol/s (0-1000).
        km_um: Michaelis constant of the uptake, uM (0-100).
        henry_um_per_mmhg: O2 solubility of the medium at 37 degC, uM/mmHg.
        diffusivity_m2_s: O2 diffusivity in the medium at 37 degC, m^2/s.
        nodes: Grid intervals of the medium layer (2-64).
        step_s: Diffusion time step, s (the mean surface O2 over the step drives it).
        vent_tau_min: Lid or vent exchange time constant, min (0: open well).
        growth_per_day: Exponential growth rate, 1/day (a recipe's ``[growth]`` overrides it).
        max_cells_per_cm2: Logistic cap, cells/cm^2 (``None``: unbounded).
        o2_basis: How the headspace O2 sensor reports: % of dry gas, % of humid gas at the site
            pressure, or partial pressure as % of 760 mmHg (§B6).
        atmosphere: Pressure, humidity and temperature dependence (§B6), or ``None``.
    """

    depth_mm: float = Field(default=2.0, gt=0, le=50)
    cells_per_cm2: float = Field(default=2.5e4, ge=0, le=1e7)
    ocr_amol_per_cell_s: float = Field(default=27.0, ge=0, le=1000)
    km_um: float = Field(default=2.0, gt=0, le=100)
    henry_um_per_mmhg: float = Field(default=1.26, gt=0, le=10)
    diffusivity_m2_s: float = Field(default=3.0e-9, gt=0, le=1e-7)
    nodes: int = Field(default=8, ge=2, le=64)
    step_s: float = Field(default=5.0, gt=0, le=60)
    vent_tau_min: float = Field(default=0.0, ge=0, le=1000)
    growth_per_day: float = Field(default=0.0, ge=-2, le=5)
    max_cells_per_cm2: float | None = Field(default=None, gt=0, le=1e7)
    o2_basis: GasBasis = "dry_pct"
    atmosphere: CultureAtmosphere | None = None

    @model_validator(mode="after")
    def _cap(self) -> Self:
        cap = self.max_cells_per_cm2
        if cap is not None and cap < self.cells_per_cm2:
            msg = (
                f"max_cells_per_cm2 {cap:g} is below cells_per_cm2 {self.cells_per_cm2:g} "
                "(allowed: a cap >= the starting density)"
            )
            raise ValueError(msg)
        return self

    def with_growth(self, growth_per_day: float, max_cells_per_cm2: float | None) -> CultureModel:
        """The same culture growing as a recipe says (docs/recipes.md, ``[growth]``)."""
        return self.model_copy(
            update={"growth_per_day": growth_per_day, "max_cells_per_cm2": max_cells_per_cm2}
        )


def grow(cells: float, rate_per_day: float, cap: float | None, dt_s: float) -> float:
    """Cell density after ``dt_s``: exponential, or logistic toward ``cap`` (exact for any step).

    dX/dt = r X, or r X (1 - X/K) with a cap K; ``rate_per_day`` r in 1/day, densities in any unit.
    """
    g = math.exp(rate_per_day * dt_s / 86400.0)
    if cap is None or cells <= 0.0:
        return cells * g
    return cap / (1.0 + (cap / cells - 1.0) / g)


@dataclass(frozen=True, slots=True)
class _Coefficients:
    """§B6 factors at one temperature (ratios to their 37 degC values)."""

    temp_c: float
    vapour_mmhg: float
    henry: float
    uptake: float
    diffusivity: float


class PericellularEstimator:
    """What the cells see: the medium layer of §B7 driven by the headspace O2 as measured.

    One call of :meth:`update` per control cycle, with the cycle's trusted headspace O2 (as the
    sensor reports it, ``culture.o2_basis``), temperature and, where a sensor gives it, the
    barometric pressure. The surface concentration is C_s = H(T) pO2 (behind the vent lag when
    ``vent_tau_min`` > 0); its mean over each ``step_s`` drives one Crank-Nicolson step of the
    layer, exactly as the twin's plant does with the true chamber O2 (simulators/plant.py), so the
    same trajectory in gives the same estimate out. Cost: a few arithmetic operations per cycle
    and one tridiagonal solve per step (about 5 us).

    A missing O2 reading is bridged with the last trusted one for :data:`HOLD_UNTRUSTED_S`; after
    that the estimate is ``None`` (untrusted) until a reading returns. Temperature and pressure
    fall back to their last trusted values (37 degC and the configured pressure before any).

    Args:
        culture: The culture, with any recipe growth already applied
            (:meth:`CultureModel.with_growth`).
    """

    def __init__(self, culture: CultureModel) -> None:
        self.culture = culture
        self.layer = MediumLayer(culture.depth_mm * 1e-3, culture.nodes, 0.0)
        self.cells_per_cm2 = culture.cells_per_cm2
        self.started = False
        self.surface_um = 0.0
        self._top_sum = 0.0
        self._clock_s = 0.0
        self._grow_s = 0.0
        self._po2_mmhg = 0.0
        self._temp_c = 37.0
        self._baro_mmhg = culture.atmosphere.barometric_mmhg if culture.atmosphere else 760.0
        self._untrusted_s = 0.0
        self._coef: _Coefficients | None = None
        self._vent_decay: tuple[float, float] = (0.0, 0.0)

    # ------------------------------------------------------------------ physics of one sample
    def _coefficients(self, temp_c: float) -> _Coefficients:
        atm = self.culture.atmosphere
        coef = self._coef
        if coef is not None and abs(temp_c - coef.temp_c) <= 1e-3:
            return coef
        if atm is None:
            coef = _Coefficients(temp_c, 0.0, 1.0, 1.0, 1.0)
        elif not atm.temperature_dependent:
            coef = _Coefficients(temp_c, gas_liquid.vapour_pressure_mmhg(temp_c), 1.0, 1.0, 1.0)
        else:
            coef = _Coefficients(
                temp_c,
                gas_liquid.vapour_pressure_mmhg(temp_c),
                gas_liquid.o2_henry_ratio(temp_c, atm.salinity),
                gas_liquid.uptake_ratio(temp_c, atm.uptake_q10),
                gas_liquid.diffusivity_ratio(temp_c),
            )
        self._coef = coef
        return coef

    def po2_mmhg(self, o2_pct: float, temp_c: float, baro_mmhg: float) -> float:
        """Headspace O2 partial pressure from a reading of ``culture.o2_basis``, mmHg (§B6).

        Without ``atmosphere`` every basis reads as % of 760 mmHg (the legacy convention).
        """
        atm = self.culture.atmosphere
        if atm is None:
            return o2_pct / 100.0 * MMHG_PER_ATM
        basis = self.culture.o2_basis
        if basis == "dry_pct":
            vapour = self._coefficients(temp_c).vapour_mmhg
            return o2_pct / 100.0 * (baro_mmhg - atm.humidity_frac * vapour)
        if basis == "wet_pct":
            return o2_pct / 100.0 * baro_mmhg
        return o2_pct / 100.0 * MMHG_PER_ATM

    def henry_um_per_mmhg(self, temp_c: float) -> float:
        """Henry coefficient of the medium at ``temp_c``, uM/mmHg."""
        return self.culture.henry_um_per_mmhg * self._coefficients(temp_c).henry

    def jmax_um_m_s(self, temp_c: float) -> float:
        """Maximum uptake flux of the cell layer now, uM m/s (= mmol/m^2/s)."""
        per_cell = self.culture.ocr_amol_per_cell_s * 1e-18 * self._coefficients(temp_c).uptake
        return self.cells_per_cm2 * 1e4 * per_cell * 1e3

    def diffusivity_m2_s(self, temp_c: float) -> float:
        """O2 diffusivity of the medium at ``temp_c``, m^2/s."""
        return self.culture.diffusivity_m2_s * self._coefficients(temp_c).diffusivity

    # -------------------------------------------------------------------------- the cycle
    def update(
        self,
        dt_s: float,
        o2_pct: float | None,
        temp_c: float | None = None,
        barometric_mmhg: float | None = None,
    ) -> float | None:
        """Account one control period of ``dt_s`` ending now; return the estimate, %-equivalent.

        Args:
            dt_s: The control period, s (> 0).
            o2_pct: Trusted headspace O2 as the sensor reports it, % (``None``: untrusted).
            temp_c: Trusted medium (chamber) temperature, degC, or ``None``.
            barometric_mmhg: Trusted site pressure, mmHg, or ``None`` (the configured value).

        Returns:
            Pericellular O2 as % of 760 mmHg at the medium's Henry coefficient (0-100), or
            ``None`` before the first trusted O2 reading and while the estimate is untrusted.
        """
        if temp_c is not None:
            self._temp_c = temp_c
        if barometric_mmhg is not None:
            self._baro_mmhg = barometric_mmhg
        temp = self._temp_c
        if o2_pct is not None:
            self._po2_mmhg = self.po2_mmhg(o2_pct, temp, self._baro_mmhg)
            self._untrusted_s = 0.0
        elif self.started:
            self._untrusted_s += dt_s
        if not self.started:
            if o2_pct is None:
                return None
            self._settle(temp)
            return self.estimate_pct()
        cu = self.culture
        c_eq = self.henry_um_per_mmhg(temp) * self._po2_mmhg
        if cu.vent_tau_min > 0.0:
            dt_cached, decay = self._vent_decay
            if dt_cached != dt_s:
                decay = math.exp(-dt_s / (60.0 * cu.vent_tau_min))
                self._vent_decay = (dt_s, decay)
            c_eq = c_eq + (self.surface_um - c_eq) * decay
        self.surface_um = c_eq
        self._top_sum += c_eq * dt_s
        self._clock_s += dt_s
        self._grow_s += dt_s
        if self._clock_s >= cu.step_s - 1e-9:
            step = self._clock_s
            if cu.growth_per_day != 0.0:
                self.cells_per_cm2 = grow(
                    self.cells_per_cm2, cu.growth_per_day, cu.max_cells_per_cm2, self._grow_s
                )
                self._grow_s = 0.0
            self.layer.step(
                step,
                self._top_sum / step,
                self.diffusivity_m2_s(temp),
                self.jmax_um_m_s(temp),
                cu.km_um,
            )
            self._top_sum = 0.0
            self._clock_s = 0.0
        if self._untrusted_s > HOLD_UNTRUSTED_S:
            return None
        return self.estimate_pct()

    def _settle(self, temp_c: float) -> None:
        """Start from the steady profile under the first trusted reading."""
        c_eq = self.henry_um_per_mmhg(temp_c) * self._po2_mmhg
        self.surface_um = c_eq
        self.layer.c = [c_eq] * (self.culture.nodes + 1)
        self.layer.settle(
            c_eq, self.jmax_um_m_s(temp_c), self.culture.km_um, self.diffusivity_m2_s(temp_c)
        )
        self.started = True

    def estimate_pct(self) -> float:
        """The cell-layer O2 now as %-equivalent (% of 760 mmHg), at the last temperature."""
        return self.layer.cell_um / self.henry_um_per_mmhg(self._temp_c) / MMHG_PER_ATM * 100.0

    @property
    def cell_um(self) -> float:
        """The cell-layer O2 now, uM."""
        return self.layer.cell_um

    # ------------------------------------------------------------------------ journal state
    def snapshot(self) -> dict[str, Any]:
        """Plain-data state for the run journal (restoring it continues the same estimate)."""
        return {
            "started": self.started,
            "profile_um": list(self.layer.c),
            "cells_per_cm2": self.cells_per_cm2,
            "surface_um": self.surface_um,
            "top_sum_um_s": self._top_sum,
            "clock_s": self._clock_s,
            "grow_s": self._grow_s,
            "po2_mmhg": self._po2_mmhg,
            "temp_c": self._temp_c,
            "baro_mmhg": self._baro_mmhg,
            "untrusted_s": self._untrusted_s,
        }

    @classmethod
    def restore(cls, culture: CultureModel, data: dict[str, Any]) -> PericellularEstimator:
        """Rebuild from :meth:`snapshot`; a profile of another grid size starts afresh."""
        est = cls(culture)
        profile = [float(v) for v in data.get("profile_um", [])]
        if len(profile) != culture.nodes + 1 or not data.get("started"):
            return est
        est.layer.c = profile
        est.started = True
        est.cells_per_cm2 = float(data["cells_per_cm2"])
        est.surface_um = float(data["surface_um"])
        est._top_sum = float(data["top_sum_um_s"])
        est._clock_s = float(data["clock_s"])
        est._grow_s = float(data["grow_s"])
        est._po2_mmhg = float(data["po2_mmhg"])
        est._temp_c = float(data["temp_c"])
        est._baro_mmhg = float(data["baro_mmhg"])
        est._untrusted_s = float(data["untrusted_s"])
        return est
