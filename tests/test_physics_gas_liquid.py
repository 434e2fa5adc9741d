"""Gas-liquid equilibrium with temperature, humidity and pressure (docs/physics.md §B6)."""

from __future__ import annotations

import pytest

from simulators import gas_liquid as gl
from simulators.plant import Plant
from simulators.vessel import AtmosphereSection, Vessel, load_vessel

O2_MG_PER_UMOL = 31.998e-3


@pytest.mark.parametrize(("temp_c", "mg_per_l"), [(20.0, 9.09), (30.0, 7.56)])
def test_o2_solubility_matches_benson_krause_tables(temp_c: float, mg_per_l: float) -> None:
    """Air-saturated fresh water at 1 atm (USGS / Benson & Krause tables): 9.09 and 7.56 mg/L."""
    umol_l = gl.o2_saturation_umol_kg(temp_c) * gl.water_density_kg_l(temp_c)
    assert umol_l * O2_MG_PER_UMOL == pytest.approx(mg_per_l, abs=0.01)


def test_o2_solubility_at_37c_matches_weiss_value_in_docs() -> None:
    """§B2: 211 umol/kg at 37 degC under moist air at 1 atm (Weiss 1970)."""
    assert gl.o2_saturation_umol_kg(37.0) == pytest.approx(211.0, rel=0.005)


def test_henry_ratio_30_over_37() -> None:
    """H(30)/H(37) = [C_sat(30) rho(30)/(x (760 - p_w(30)))] / [same at 37], by hand: 1.100."""
    by_hand = (237.25 * 0.99583 / (0.20946 * (760 - 31.84))) / (
        211.65 * 0.99346 / (0.20946 * (760 - 47.10))
    )
    assert gl.o2_henry_ratio(30.0) == pytest.approx(by_hand, rel=1e-3)
    assert gl.o2_henry_ratio(30.0) == pytest.approx(1.100, abs=0.002)


def test_water_vapour_pressure_by_hand() -> None:
    """Buck (1981): 47.1 mmHg at 37 degC (the textbook 47 mmHg), 31.8 at 30, 17.5 at 20."""
    assert gl.vapour_pressure_mmhg(37.0) == pytest.approx(47.1, abs=0.1)
    assert gl.vapour_pressure_mmhg(30.0) == pytest.approx(31.8, abs=0.1)
    assert gl.vapour_pressure_mmhg(20.0) == pytest.approx(17.5, abs=0.1)


def test_partial_pressure_with_vapour_and_altitude_by_hand() -> None:
    """Room air humidified at 37 degC: 0.2095 (760 - 47.1) = 149.4 mmHg; at 630 mmHg 122.1."""
    assert gl.o2_partial_pressure_mmhg(0.2095, 760.0, 37.0, 1.0) == pytest.approx(149.35, abs=0.05)
    assert gl.o2_partial_pressure_mmhg(0.2095, 630.0, 37.0, 1.0) == pytest.approx(122.11, abs=0.05)
    assert gl.o2_partial_pressure_mmhg(0.2095, 760.0, 37.0, 0.0) == pytest.approx(159.22)


def test_co2_solubility_weiss() -> None:
    """Weiss (1974) K0, fresh water at 25 degC: 0.0339 mol/(kg atm) -> 44.6 uM/mmHg."""
    assert gl.co2_solubility_um_per_mmhg(25.0) * 760.0 / 1e6 / 0.99722 == pytest.approx(
        0.0339, rel=0.01
    )
    assert gl.co2_solubility_um_per_mmhg(37.0) < gl.co2_solubility_um_per_mmhg(30.0)


def test_temperature_factors() -> None:
    """kLa theta^(T-37) with theta 1.024; uptake Q10 2; Stokes-Einstein diffusivity."""
    assert gl.kla_ratio(30.0) == pytest.approx(1.024**-7)
    assert gl.uptake_ratio(30.0) == pytest.approx(2.0**-0.7)
    assert gl.uptake_ratio(37.0) == 1.0
    assert gl.diffusivity_ratio(20.0) == pytest.approx(0.651, abs=0.005)  # 1.97e-9/3.0e-9 (§B2)


def _bioreactor(temp_c: float, humidity: float, cells: float = 0.0) -> tuple[Plant, Vessel]:
    v = load_vessel("bioreactor-2l")
    assert v.liquid is not None
    atm = AtmosphereSection(humidity_frac=humidity, temperature_dependent=True)
    v = v.model_copy(
        update={
            "atmosphere": atm,
            "liquid": v.liquid.model_copy(update={"cells_per_ml": cells}),
            "initial": v.initial.model_copy(update={"temp_c": temp_c}),
        }
    )
    return Plant(v), v


def _steady_do(temp_c: float, humidity: float, cells: float = 0.0) -> tuple[float, Plant]:
    plant, v = _bioreactor(temp_c, humidity, cells)
    heater = v.thermal.ua_w_per_k * (temp_c - v.thermal.room_temp_c)  # holds T exactly
    for _ in range(40 * 3600 // 5):
        plant.advance(5.0, 0.0, 0.3, 0.0, 0.0, heater)
    assert plant.state.temp_c == pytest.approx(temp_c, abs=1e-6)
    return plant.state.do_um, plant


def test_steady_do_at_30_and_37c_follows_solubility() -> None:
    """No cells, air overlay: DO = H(T) pO2; 30 degC is 10.0 % higher (dry), 12.4 % (humid)."""
    do37, _ = _steady_do(37.0, 1.0)
    do30, _ = _steady_do(30.0, 1.0)
    assert do37 == pytest.approx(1.26 * 0.2095 * (760 - 47.10), rel=1e-3)  # 188.2 uM
    by_hand = gl.o2_henry_ratio(30.0) * (760 - 31.84) / (760 - 47.10)
    assert do30 / do37 == pytest.approx(by_hand, rel=1e-3)
    assert do30 / do37 == pytest.approx(1.124, abs=0.002)
    dry37, _ = _steady_do(37.0, 0.0)
    dry30, _ = _steady_do(30.0, 0.0)
    assert dry30 / dry37 == pytest.approx(gl.o2_henry_ratio(30.0), rel=1e-3)


def test_steady_do_deficit_with_cells_at_30c() -> None:
    """C* - C = OUR(T)/kLa(T) with the Q10 and theta factors at 30 degC (C >> Km)."""
    do, plant = _steady_do(30.0, 1.0, cells=5e5)
    lq = plant.vessel.liquid
    assert lq is not None
    our = 5e5 * 1e3 * lq.qo2_amol_per_cell_s * 1e-12 * 3600 * gl.uptake_ratio(30.0)
    kla = lq.kla_per_h * gl.kla_ratio(30.0)
    c_star = plant.henry(lq.henry_um_per_mmhg) * plant.o2_mmhg
    assert c_star - do == pytest.approx(our / kla, rel=0.03)


def test_legacy_vessel_without_atmosphere_is_dry_760() -> None:
    """No [atmosphere]: C* = H x 760 whatever the temperature (today's convention)."""
    plant = Plant(load_vessel("bioreactor-2l"))
    assert plant.o2_mmhg == pytest.approx(plant.state.o2_frac * 760.0)
    assert plant.henry(1.26) == 1.26


def test_sensor_basis_converted_once() -> None:
    """1 % dry O2, humid at 37 degC: dry 1.000 %, wet 0.938 % at 760, pp 0.767 % at 630 mmHg."""
    v = load_vessel("workstation-100l")
    atm = AtmosphereSection(barometric_mmhg=630.0, humidity_frac=1.0)
    v = v.model_copy(
        update={"atmosphere": atm, "initial": v.initial.model_copy(update={"temp_c": 37.0})}
    )
    plant = Plant(v)
    assert plant.gas_reading(0.01, "dry_pct") == pytest.approx(1.0)
    assert plant.gas_reading(0.01, "wet_pct") == pytest.approx((630 - 47.10) / 630, abs=1e-3)
    assert plant.gas_reading(0.01, "pp_pct") == pytest.approx((630 - 47.10) / 760, abs=1e-3)


def test_example_humid_vessel_reads_partial_pressure() -> None:
    """examples/vessels/workstation-100l-humid.toml: 95 % RH, pp sensors; 1 % dry reads 0.941 %."""
    v = load_vessel("examples/vessels/workstation-100l-humid.toml")
    assert v.atmosphere is not None
    assert v.o2_sensor.basis == "pp_pct"
    v = v.model_copy(update={"initial": v.initial.model_copy(update={"temp_c": 37.0})})
    plant = Plant(v)
    assert plant.gas_reading(0.01, "pp_pct") == pytest.approx((760 - 0.95 * 47.10) / 760, abs=1e-3)


def test_site_simulator_applies_the_sensor_basis() -> None:
    """Wire-level simulators read the same basis as the twin: pp sensor, 95 % RH at 37 degC."""
    from common.clock import ManualClock
    from simulators.site_sim import PlantLinkModel

    v = load_vessel("examples/vessels/workstation-100l-humid.toml")
    v = v.model_copy(update={"initial": v.initial.model_copy(update={"temp_c": 37.0})})
    sim = PlantLinkModel(v, ManualClock())
    expected = 20.9 * (760 - 0.95 * 47.10) / 760
    assert sim.o2_pct() == pytest.approx(expected, abs=0.01)
