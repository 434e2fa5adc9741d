"""Gas-liquid equilibrium (docs/physics.md §B6): kept under its old name for the twin's code.

The functions live in :mod:`controller.core.gas_liquid`, so the service's pericellular estimator
(controller/core/pericellular.py) uses the very same physics without importing simulators.
"""

from __future__ import annotations

from controller.core.gas_liquid import (
    KLA_THETA,
    REFERENCE_TEMP_C,
    UPTAKE_Q10,
    X_O2_DRY_AIR,
    co2_solubility_um_per_mmhg,
    diffusivity_ratio,
    kla_ratio,
    o2_henry_ratio,
    o2_henry_water_um_per_mmhg,
    o2_partial_pressure_mmhg,
    o2_saturation_umol_kg,
    uptake_ratio,
    vapour_pressure_mmhg,
    water_density_kg_l,
    water_viscosity_pa_s,
)

__all__ = [
    "KLA_THETA",
    "REFERENCE_TEMP_C",
    "UPTAKE_Q10",
    "X_O2_DRY_AIR",
    "co2_solubility_um_per_mmhg",
    "diffusivity_ratio",
    "kla_ratio",
    "o2_henry_ratio",
    "o2_henry_water_um_per_mmhg",
    "o2_partial_pressure_mmhg",
    "o2_saturation_umol_kg",
    "uptake_ratio",
    "vapour_pressure_mmhg",
    "water_density_kg_l",
    "water_viscosity_pa_s",
]
