"""Gas-liquid equilibrium with temperature, salinity, humidity and pressure (docs/physics.md §B6).

Pure functions; every constant names its source in docs/physics.md §B6:

* O2 solubility in water: Benson & Krause (1984) as fitted by Garcia & Gordon (1992), umol/kg at
  1 atm total pressure of water-saturated air;
* CO2 solubility: Weiss (1974), mol/(kg atm);
* saturation vapour pressure of water: Buck (1981);
* water viscosity (for the Stokes-Einstein scaling of the O2 diffusivity): Vogel equation;
* kLa temperature factor theta^(T - 37) with theta = 1.024 (ASCE aeration standard);
* cell O2 uptake Q10 = 2 (assumption, §B6).

Partial pressures are mmHg, temperatures degC, concentrations uM (umol/L).
"""

from __future__ import annotations

import math

REFERENCE_TEMP_C = 37.0
"""Temperature at which the vessel files state Henry coefficients, kLa, OCR and diffusivity."""
X_O2_DRY_AIR = 0.20946
"""O2 mole fraction of dry air used by the Benson-Krause fit."""
KLA_THETA = 1.024
"""kLa temperature factor per K (ASCE 2-06 / Eckenfelder)."""
UPTAKE_Q10 = 2.0
"""Q10 of cell O2 uptake (assumption, §B6)."""

_GG_A = (5.80871, 3.20291, 4.17887, 5.10006, -9.86643e-2, 3.80369)
_GG_B = (-7.01577e-3, -7.70028e-3, -1.13864e-2, -9.51519e-3)
_GG_C0 = -2.75915e-7
_WEISS_CO2 = (-58.0931, 90.5069, 22.2940, 0.027766, -0.025888, 0.0050578)


def vapour_pressure_mmhg(temp_c: float) -> float:
    """Saturation vapour pressure of water over a flat surface (Buck 1981), mmHg."""
    hpa = 6.1121 * math.exp((18.678 - temp_c / 234.5) * (temp_c / (257.14 + temp_c)))
    return hpa * 760.0 / 1013.25


def o2_saturation_umol_kg(temp_c: float, salinity: float = 0.0) -> float:
    """O2 in water at equilibrium with water-saturated air at 1 atm (Garcia & Gordon 1992), umol/kg.

    Args:
        temp_c: Water temperature, degC (fit valid 0-40 degC).
        salinity: Practical salinity (0 for fresh water; culture medium ~ 8-9, §B6).
    """
    ts = math.log((298.15 - temp_c) / (273.15 + temp_c))
    a0, a1, a2, a3, a4, a5 = _GG_A
    b0, b1, b2, b3 = _GG_B
    ln_c = a0 + ts * (a1 + ts * (a2 + ts * (a3 + ts * (a4 + ts * a5))))
    ln_c += salinity * (b0 + ts * (b1 + ts * (b2 + ts * b3))) + _GG_C0 * salinity * salinity
    return math.exp(ln_c)


def water_density_kg_l(temp_c: float) -> float:
    """Density of pure water, cubic fit around 4 degC (within 2e-4 of tables, 0-40 degC), kg/L."""
    return 1.0 - 6.8e-6 * (temp_c - 4.0) ** 2 + 2.4e-8 * (temp_c - 4.0) ** 3


def o2_henry_water_um_per_mmhg(temp_c: float, salinity: float = 0.0) -> float:
    """O2 Henry coefficient of water from :func:`o2_saturation_umol_kg`, uM per mmHg of pO2."""
    po2 = X_O2_DRY_AIR * (760.0 - vapour_pressure_mmhg(temp_c))
    return o2_saturation_umol_kg(temp_c, salinity) * water_density_kg_l(temp_c) / po2


def o2_henry_ratio(temp_c: float, salinity: float = 0.0) -> float:
    """H(T)/H(37 degC): scales a vessel's Henry coefficient stated at 37 degC."""
    ref = o2_henry_water_um_per_mmhg(REFERENCE_TEMP_C, salinity)
    return o2_henry_water_um_per_mmhg(temp_c, salinity) / ref


def co2_solubility_um_per_mmhg(temp_c: float, salinity: float = 0.0) -> float:
    """CO2 solubility K0 (Weiss 1974) as uM per mmHg of pCO2 (density of water applied)."""
    a1, a2, a3, b1, b2, b3 = _WEISS_CO2
    t100 = (temp_c + 273.15) / 100.0
    ln_k0 = a1 + a2 / t100 + a3 * math.log(t100) + salinity * (b1 + t100 * (b2 + t100 * b3))
    return math.exp(ln_k0) * 1e6 / 760.0 * water_density_kg_l(temp_c)


def water_viscosity_pa_s(temp_c: float) -> float:
    """Dynamic viscosity of water (Vogel equation), Pa s."""
    return float(2.414e-5 * 10.0 ** (247.8 / (temp_c + 273.15 - 140.0)))


def diffusivity_ratio(temp_c: float) -> float:
    """D(T)/D(37 degC) by Stokes-Einstein, D proportional to T/mu(T)."""
    ref = (REFERENCE_TEMP_C + 273.15) / water_viscosity_pa_s(REFERENCE_TEMP_C)
    return (temp_c + 273.15) / water_viscosity_pa_s(temp_c) / ref


def kla_ratio(temp_c: float, theta: float = KLA_THETA) -> float:
    """kLa(T)/kLa(37 degC) = theta^(T - 37)."""
    return float(theta ** (temp_c - REFERENCE_TEMP_C))


def uptake_ratio(temp_c: float, q10: float = UPTAKE_Q10) -> float:
    """OCR(T)/OCR(37 degC) = Q10^((T - 37)/10)."""
    return float(q10 ** ((temp_c - REFERENCE_TEMP_C) / 10.0))


def o2_partial_pressure_mmhg(
    x_dry: float, barometric_mmhg: float, temp_c: float, humidity_frac: float
) -> float:
    """pO2 of a gas whose dry-basis O2 fraction is ``x_dry``, humidified to ``humidity_frac``.

    pO2 = x_dry (P_baro - RH p_w(T)): water vapour displaces the dry gas at constant total pressure.
    """
    return x_dry * (barometric_mmhg - humidity_frac * vapour_pressure_mmhg(temp_c))
