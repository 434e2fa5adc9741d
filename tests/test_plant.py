"""The plant model against closed forms of the gas balance, heat balance, sensors and culture."""

from __future__ import annotations

import math
import random

import pytest

from controller.core.process import X_AIR_O2, descent_time_s, steady_n2_lpm
from simulators.plant import Plant
from simulators.sensors import SensorModel
from simulators.vessel import SensorSection, Vessel, load_vessel


def _vessel(name: str, **gas: float) -> Vessel:
    base = load_vessel(name)
    return base.model_copy(update={"gas": base.gas.model_copy(update=gas)})


@pytest.mark.parametrize("name", ["workstation-100l", "incubator-170l", "bioreactor-2l"])
def test_pure_n2_purge_follows_exponential(name: str) -> None:
    """No leak, pure N2: x(t) = x0 e^(-Qt/V) within 1 % at every minute for 30 min."""
    vessel = _vessel(name, leak_lpm=0.0, mfc_tau_s=0.0, min_through_flow_lpm=0.0)
    vessel = vessel.model_copy(update={"gas": vessel.gas.model_copy(update={"actuator": "mfc"})})
    plant = Plant(vessel)
    q, v = vessel.gas.n2_max_lpm, vessel.gas.volume_l
    x0 = plant.state.o2_frac
    for minute in range(1, 31):
        for _ in range(60):
            plant.advance(1.0, q, 0.0, 0.0, 0.0, 0.0)
        expected = x0 * math.exp(-q * minute / v)
        assert plant.state.o2_frac == pytest.approx(expected, rel=0.01)


def test_steady_n2_against_leak_matches_closed_form() -> None:
    """Holding N2 at Q_L (x_a/x_sp - 1) settles the chamber at x_sp (within 1 %)."""
    vessel = _vessel("workstation-100l", mfc_tau_s=0.0)
    plant = Plant(vessel)
    x_sp = 0.02
    q_n = vessel.gas.leak_lpm * (X_AIR_O2 / x_sp - 1.0)
    assert q_n == pytest.approx(steady_n2_lpm(vessel.process_model(), x_sp, 0.0))
    for _ in range(24 * 3600 // 10):  # tau = V/(Q + Q_L) ~ 95 min: 24 h is 15 tau
        plant.advance(10.0, q_n, 0.0, 0.0, 0.0, 0.0)
    assert plant.state.o2_frac == pytest.approx(x_sp, rel=0.01)


def test_leaky_purge_time_matches_closed_form() -> None:
    """Full N2 against the leak reaches 1 % in t = tau ln((x0 - x_inf)/(x1 - x_inf))."""
    vessel = _vessel("workstation-100l", mfc_tau_s=0.0)
    plant = Plant(vessel)
    g = vessel.gas
    expected_s = descent_time_s(g.volume_l, g.n2_max_lpm, g.leak_lpm, plant.state.o2_frac, 0.01)
    t = 0
    while plant.state.o2_frac > 0.01:
        plant.advance(1.0, g.n2_max_lpm, 0.0, 0.0, 0.0, 0.0)
        t += 1
    assert t == pytest.approx(expected_s, abs=1.0)
    assert expected_s / 60 == pytest.approx(15.7, abs=0.1)  # reference table B1: 15.7 min


def test_leak_alone_brings_o2_back_toward_air() -> None:
    """With no inflow, x(t) = x_a - (x_a - x0) e^(-Q_L t / V) (N2-off decay test)."""
    vessel = _vessel("workstation-100l")
    vessel = vessel.model_copy(
        update={"initial": vessel.initial.model_copy(update={"o2_pct": 1.0})}
    )
    plant = Plant(vessel)
    hours = 10
    for _ in range(hours * 3600):
        plant.advance(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    q_l, v = vessel.gas.leak_lpm, vessel.gas.volume_l
    expected = X_AIR_O2 - (X_AIR_O2 - 0.01) * math.exp(-q_l * hours * 60 / v)
    assert plant.state.o2_frac == pytest.approx(expected, rel=1e-6)


def test_door_opening_exchanges_95_percent_in_30_s() -> None:
    """tau_door 10 s: a 30 s opening brings 1 - e^-3 = 95 % of the way to room air."""
    vessel = load_vessel("incubator-170l")
    vessel = vessel.model_copy(
        update={"initial": vessel.initial.model_copy(update={"o2_pct": 1.0})}
    )
    plant = Plant(vessel)
    plant.door_open = True
    for _ in range(30):
        plant.advance(1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    share = (plant.state.o2_frac - 0.01) / (X_AIR_O2 - 0.01)
    assert share == pytest.approx(1 - math.exp(-3), abs=0.005)


def test_heat_balance_settles_at_room_plus_p_over_ua() -> None:
    vessel = load_vessel("workstation-100l")
    plant = Plant(vessel)
    th = vessel.thermal
    for _ in range(48 * 3600 // 10):
        plant.advance(10.0, 0.0, 0.0, 0.0, 0.0, 100.0)
    assert plant.state.temp_c == pytest.approx(th.room_temp_c + 100.0 / th.ua_w_per_k, abs=0.01)


def test_co2_injection_settles_at_ratio() -> None:
    """CO2 Q_C against N2 Q_N (no leak) settles at c = Q_C/(Q_C + Q_N)."""
    vessel = _vessel("workstation-100l", leak_lpm=0.0, mfc_tau_s=0.0)
    plant = Plant(vessel)
    for _ in range(3 * 3600):
        plant.advance(1.0, 10.0, 0.0, 0.0, 0.5, 0.0)
    assert plant.state.co2_frac == pytest.approx(0.5 / 10.5, rel=1e-4)


def test_mfc_lag_mean_flow() -> None:
    """A first-order MFC (tau 0.5 s) delivers 1 - (tau/dt)(1 - e^(-dt/tau)) in its first step."""
    vessel = load_vessel("workstation-100l")
    plant = Plant(vessel)
    plant.advance(1.0, 10.0, 0.0, 0.0, 0.0, 0.0)
    expected = 10.0 * (1 - 0.5 * (1 - math.exp(-2.0)))
    assert plant.state.flows.n2_lpm == pytest.approx(expected)


def test_solenoid_pwm_average_flow_is_unbiased() -> None:
    """Sigma-delta carry: the mean flow of a quantised solenoid equals the setpoint."""
    vessel = load_vessel("incubator-170l")
    plant = Plant(vessel)
    total = 0.0
    for _ in range(1000):
        plant.advance(1.0, 0.6, 0.0, 0.0, 0.0, 0.0)
        total += plant.state.flows.n2_lpm
    assert total / 1000 == pytest.approx(0.6, rel=1e-3)
    assert plant.state.gas_used_l["n2"] == pytest.approx(0.6 * 1000 / 60, rel=1e-3)


def test_pericellular_drop_matches_reference_table() -> None:
    """2.5e4 cells/cm2, 2 mm, 27 amol/s: the drop J L/D is 4.5 uM when O2 is plentiful."""
    plant = Plant(load_vessel("workstation-100l"))
    c_m = plant.state.medium_o2_um
    assert c_m == pytest.approx(1.26 * 0.209 * 760, rel=1e-3)
    drop = c_m - plant.pericellular_o2_um()
    assert drop == pytest.approx(4.5, rel=0.05)


def test_bioreactor_do_deficit_is_our_over_kla() -> None:
    """Steady DO under a fixed headspace: C* - C = OUR/kLa for C >> Km (reference B2)."""
    vessel = load_vessel("bioreactor-2l")
    plant = Plant(vessel)
    for _ in range(20 * 3600 // 5):
        plant.advance(5.0, 0.0, 0.3, 0.0, 0.0, 0.0)
    lq = vessel.liquid
    assert lq is not None
    our = lq.cells_per_ml * 1e3 * lq.qo2_amol_per_cell_s * 1e-12 * 3600  # uM/h
    c_star = lq.henry_um_per_mmhg * plant.o2_mmhg
    assert c_star - plant.state.do_um == pytest.approx(our / lq.kla_per_h, rel=0.03)


def test_sensor_step_response_and_delay() -> None:
    """Delay 5 samples, then first order: after delay + t63 the reading is 63 % of the step."""
    spec = SensorSection(t63_s=10.0)
    sensor = SensorModel(spec, 1.0, 5.0, random.Random(0), initial=0.0)
    readings = [sensor.sample(1.0) for _ in range(40)]
    assert readings[4] == 0.0  # still inside the transport delay
    assert readings[4 + 10] == pytest.approx(1 - math.exp(-1.0), abs=0.01)


def test_sensor_noise_drift_quantisation() -> None:
    spec = SensorSection(t63_s=0.0, noise_sd=0.02, drift_per_week=0.05, resolution=0.01)
    sensor = SensorModel(spec, 60.0, 0.0, random.Random(1), initial=2.0)
    values = [sensor.sample(2.0) for _ in range(7 * 24 * 60)]  # one week at 1 sample/min
    assert all(abs(round(v / 0.01) * 0.01 - v) < 1e-9 for v in values)
    assert sum(values[-1000:]) / 1000 == pytest.approx(2.05, abs=0.005)


def test_plant_is_deterministic_for_a_seed() -> None:
    def run(seed: int) -> list[float]:
        spec = SensorSection(t63_s=5.0, noise_sd=0.02)
        sensor = SensorModel(spec, 1.0, 0.0, random.Random(seed), initial=1.0)
        return [sensor.sample(1.0) for _ in range(100)]

    assert run(7) == run(7)
    assert run(7) != run(8)
