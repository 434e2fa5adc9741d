"""What the controller knows about its vessel, and the closed forms of the headspace gas balance.

The controller never sees the plant; it holds a :class:`ProcessModel` (nominal parameters from a
vessel or site file) and derives feed-forward, gains and physical limits from it. The closed forms
below (docs/physics.md §B1, docs/control.md §D3) are shared by recipe validation, the controller
and the run summary, so every part of the system agrees on what "physically possible" means.

Conventions: gas fractions are dry-basis volume fractions in 0..1 inside this module; flows are
L/min; volumes L; times s unless the name says otherwise.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

X_AIR_O2 = 0.2095
"""O2 fraction of dry room air."""
X_AIR_CO2 = 0.0004
"""CO2 fraction of room air."""
MMHG_PER_ATM = 760.0
"""Total pressure used to convert gas % to partial pressure (sea level)."""


class LiquidModel(BaseModel):
    """Dissolved-O2 side of a stirred bioreactor (medium under a gas overlay).

    Attributes:
        kla_per_h: Volumetric gas-liquid transfer coefficient, 1/h (0.38-1.13 surface aeration).
        henry_um_per_mmhg: O2 solubility in medium, uM per mmHg (1.26 at 37 degC).
        our_um_per_h: Nominal oxygen uptake rate of the culture, uM/h (0-500).
        do_sensor_t63_s: DO probe first-order time constant, s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kla_per_h: float = Field(gt=0, le=100)
    henry_um_per_mmhg: float = Field(gt=0, le=10)
    our_um_per_h: float = Field(ge=0, le=5000)
    do_sensor_t63_s: float = Field(ge=0, le=600)


class ProcessModel(BaseModel):
    """Nominal parameters the controller uses for one reactor.

    Attributes:
        volume_l: Gas volume whose composition is controlled (chamber or headspace), L.
        leak_lpm: Bidirectional leak exchange with room air, L/min (0-50).
        n2_max_lpm / air_max_lpm / o2_max_lpm / co2_max_lpm: Actuator limits, L/min (0 = absent).
        min_through_flow_lpm: Minimum total inflow kept at all times (bioreactor overlay), L/min.
        transport_delay_s: Gas transport and mixing delay to the O2 sensor, s.
        o2_sensor_t63_s / co2_sensor_t63_s / temp_sensor_t63_s: Sensor time constants, s.
        heat_capacity_j_per_k: Thermal capacity of the vessel, J/K.
        ua_w_per_k: Heat-loss conductance to the room, W/K.
        heater_max_w: Heater power limit, W.
        room_temp_c: Expected room temperature, degC.
        control_period_s: Cycle of read - check - control - actuate - record, s.
        mfc_tau_s: First-order lag of the gas mass-flow controllers, s (0.5-2 typical,
            docs/physics.md §B1); the observer and the purge landing account for it.
        o2_noise_sd_pct / co2_noise_sd_pct: 1-sigma noise of the O2 / CO2 readings, % abs (the
            observer's measurement noise and the MFC dead bands are tuned to it).
        liquid: Dissolved-O2 model, only for bioreactors controlled on DO.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume_l: float = Field(gt=0, le=10_000)
    leak_lpm: float = Field(ge=0, le=50)
    n2_max_lpm: float = Field(gt=0, le=1000)
    air_max_lpm: float = Field(ge=0, le=1000)
    o2_max_lpm: float = Field(ge=0, le=1000)
    co2_max_lpm: float = Field(ge=0, le=1000)
    min_through_flow_lpm: float = Field(default=0.0, ge=0, le=1000)
    transport_delay_s: float = Field(ge=0, le=300)
    o2_sensor_t63_s: float = Field(ge=0, le=600)
    co2_sensor_t63_s: float = Field(ge=0, le=600)
    temp_sensor_t63_s: float = Field(ge=0, le=600)
    heat_capacity_j_per_k: float = Field(gt=0)
    ua_w_per_k: float = Field(gt=0)
    heater_max_w: float = Field(gt=0)
    room_temp_c: float = Field(ge=-10, le=45)
    control_period_s: float = Field(default=1.0, gt=0, le=60)
    mfc_tau_s: float = Field(default=0.5, ge=0, le=60)
    o2_noise_sd_pct: float = Field(default=0.02, gt=0, le=5)
    co2_noise_sd_pct: float = Field(default=0.02, gt=0, le=5)
    liquid: LiquidModel | None = None

    @property
    def o2_dead_time_s(self) -> float:
        """Delay from a gas change to the O2 reading: transport + t63 + half a cycle, s."""
        return self.transport_delay_s + self.o2_sensor_t63_s + 0.5 * self.control_period_s

    @property
    def co2_dead_time_s(self) -> float:
        """Effective delay between a gas change and the CO2 reading, s."""
        return self.transport_delay_s + self.co2_sensor_t63_s + 0.5 * self.control_period_s


def co2_ratio_lpm(co2_frac: float, other_inflow_lpm: float, leak_lpm: float) -> float:
    """CO2 flow that holds ``co2_frac`` against dilution by the other inflows and the leak, L/min.

    From V dc/dt = Q_C (1 - c) - (Q_other + Q_L) c = 0 (room-air CO2 neglected).
    """
    if co2_frac <= 0.0:
        return 0.0
    return co2_frac / (1.0 - co2_frac) * (other_inflow_lpm + leak_lpm)


def leak_floor_frac(model: ProcessModel, co2_frac: float = 0.0) -> float:
    """Lowest O2 fraction the vessel can reach: full N2 (plus ratio CO2) against its leak."""
    q_c = min(co2_ratio_lpm(co2_frac, model.n2_max_lpm, model.leak_lpm), model.co2_max_lpm)
    q_in = model.n2_max_lpm + q_c
    return model.leak_lpm * X_AIR_O2 / (q_in + model.leak_lpm)


def descent_time_s(
    volume_l: float, dilution_lpm: float, leak_lpm: float, x0: float, x1: float
) -> float:
    """Time for O2 to fall from ``x0`` to ``x1`` under an O2-free inflow, s (``inf`` if never).

    t = tau ln((x0 - x_inf)/(x1 - x_inf)), tau = V/(Q + Q_L), x_inf = Q_L x_a/(Q + Q_L)
    (docs/control.md §D3.1). Returns 0 when ``x1 >= x0``.
    """
    if x1 >= x0:
        return 0.0
    total = dilution_lpm + leak_lpm
    if total <= 0.0:
        return math.inf
    x_inf = leak_lpm * X_AIR_O2 / total
    if x1 <= x_inf:
        return math.inf
    return 60.0 * volume_l / total * math.log((x0 - x_inf) / (x1 - x_inf))


def ascent_time_s(
    volume_l: float, air_lpm: float, o2_lpm: float, leak_lpm: float, x0: float, x1: float
) -> float:
    """Time for O2 to rise from ``x0`` to ``x1`` at full air and O2, s (``inf`` if never)."""
    if x1 <= x0:
        return 0.0
    total = air_lpm + o2_lpm + leak_lpm
    if total <= 0.0:
        return math.inf
    x_inf = ((air_lpm + leak_lpm) * X_AIR_O2 + o2_lpm) / total
    if x1 >= x_inf:
        return math.inf
    return 60.0 * volume_l / total * math.log((x_inf - x0) / (x_inf - x1))


def bang_bang_descent_s(model: ProcessModel, x0: float, x1: float, co2_frac: float) -> float:
    """Physical minimum time from ``x0`` down to ``x1``, s.

    N2 at its maximum, the CO2 flow needed to hold ``co2_frac`` during the purge, and the leak
    are all included (docs/control.md §D3.1).
    """
    q_c = min(co2_ratio_lpm(co2_frac, model.n2_max_lpm, model.leak_lpm), model.co2_max_lpm)
    return descent_time_s(model.volume_l, model.n2_max_lpm + q_c, model.leak_lpm, x0, x1)


def steady_n2_lpm(model: ProcessModel, x_sp: float, co2_lpm: float) -> float:
    """N2 flow that holds ``x_sp`` against the leak with no air: Q_L (x_a/x_sp - 1) - Q_C, L/min."""
    if x_sp <= 0.0:
        return math.inf
    return max(0.0, model.leak_lpm * (X_AIR_O2 / x_sp - 1.0) - co2_lpm)


def purge_n2_litres(volume_l: float, x0: float, x1: float) -> float:
    """N2 needed for one leak-free purge from ``x0`` to ``x1``: V ln(x0/x1), L."""
    if x1 <= 0.0 or x1 >= x0:
        return 0.0
    return volume_l * math.log(x0 / x1)


def pct_to_mmhg(pct: float) -> float:
    """Gas % of total pressure to partial pressure at sea level, mmHg."""
    return pct / 100.0 * MMHG_PER_ATM


def purge_expectation_pct(
    model: ProcessModel, start_pct: float, elapsed_s: float, n2_share: float = 0.5
) -> float:
    """Where O2 should be after purging ``elapsed_s`` with a share of the full N2 flow, %.

    Pure dilution of the chamber volume by ``n2_share * n2_max_lpm`` plus the leak (docs/physics.md
    §B1): ``x(t) = x0 exp(-t (q_N2 + q_leak) / V)``. The gas-supply alarm compares the measured
    O2 with this; assuming only half the N2 flow means only a clear supply failure (not a tuning
    error) raises it.

    Args:
        model: The vessel's process model.
        start_pct: O2 when the purge started, %.
        elapsed_s: Purge time after the loop's dead time, s (>= 0).
        n2_share: Fraction of the maximum N2 flow assumed to arrive (0-1].
    """
    tau_s = 60.0 * model.volume_l / (n2_share * model.n2_max_lpm + model.leak_lpm)
    return start_pct * math.exp(-elapsed_s / tau_s)
