"""Plant physics of a hypoxia chamber or bioreactor: pure, no I/O, deterministic for a seed.

State and balances (docs/physics.md §B):

* headspace O2 and CO2 fractions: V dx/dt = sum of inflows x (x_in - x) + (Q_L + Q_door)(x_a - x),
  solved exactly for flows constant over a step (so a pure-N2 purge is x0 e^(-Qt/V) to rounding);
* MFC lag (first order) or solenoid PWM with a minimum on-time and sigma-delta carry;
* door openings as extra exchange with room air (tau_door, share of the volume exposed);
* heat balance C dT/dt = P - (UA + UA_door)(T - T_room);
* bioreactor medium: dC/dt = kLa (H pO2 - C) - q X C/(Km + C), cells growing exponentially;
* static culture: medium O2 lags the chamber (tau_medium); pericellular O2 from the
  Michaelis-Menten-limited diffusion drop J L/D (closed-form quadratic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.core.gas import GasFlows
from controller.core.process import MMHG_PER_ATM, X_AIR_CO2, X_AIR_O2
from simulators.vessel import Vessel

O2_DIFFUSIVITY_M2_S = 3.0e-9
"""O2 diffusivity in medium at 37 degC, m^2/s."""


@dataclass(slots=True)
class PlantState:
    """True physical state (fractions 0..1, degC, uM)."""

    o2_frac: float
    co2_frac: float
    temp_c: float
    medium_o2_um: float = 0.0
    do_um: float = 0.0
    cells_per_ml: float = 0.0
    flows: GasFlows = field(default_factory=GasFlows)  # actual mean inflows over the last step
    gas_used_l: dict[str, float] = field(
        default_factory=lambda: {"n2": 0.0, "air": 0.0, "o2": 0.0, "co2": 0.0}
    )


class _Actuator:
    """One gas supply: an MFC with first-order lag, or a PWM solenoid."""

    def __init__(self, max_lpm: float, vessel: Vessel) -> None:
        self.max_lpm = max_lpm
        self.solenoid = vessel.gas.actuator == "solenoid"
        self.tau_s = vessel.gas.mfc_tau_s
        self.step_frac = vessel.gas.min_on_s / vessel.gas.pwm_period_s if self.solenoid else 0.0
        self.flow_lpm = 0.0
        self._carry = 0.0

    def mean_flow(self, setpoint_lpm: float, dt_s: float) -> float:
        """Advance over ``dt_s`` toward ``setpoint_lpm`` and return the mean flow, L/min."""
        sp = min(max(setpoint_lpm, 0.0), self.max_lpm)
        if self.max_lpm <= 0.0:
            return 0.0
        if self.solenoid:
            duty = sp / self.max_lpm + self._carry
            quant = round(duty / self.step_frac) * self.step_frac if self.step_frac > 0 else duty
            quant = min(max(quant, 0.0), 1.0)
            self._carry = duty - quant
            self.flow_lpm = quant * self.max_lpm
            return self.flow_lpm
        if self.tau_s <= 0.0:
            self.flow_lpm = sp
            return sp
        decay = math.exp(-dt_s / self.tau_s)
        mean = sp + (self.flow_lpm - sp) * self.tau_s / dt_s * (1.0 - decay)
        self.flow_lpm = sp + (self.flow_lpm - sp) * decay
        return mean


class Plant:
    """A vessel's physics advanced in fixed steps.

    Args:
        vessel: Physical parameters (the truth the controller only estimates).
    """

    def __init__(self, vessel: Vessel) -> None:
        self.vessel = vessel
        g = vessel.gas
        init = vessel.initial
        temp = init.temp_c if init.temp_c is not None else vessel.thermal.room_temp_c
        self.state = PlantState(
            o2_frac=init.o2_pct / 100.0, co2_frac=init.co2_pct / 100.0, temp_c=temp
        )
        self._mfc = {
            "n2": _Actuator(g.n2_max_lpm, vessel),
            "air": _Actuator(g.air_max_lpm, vessel),
            "o2": _Actuator(g.o2_max_lpm, vessel),
            "co2": _Actuator(g.co2_max_lpm, vessel),
        }
        self.door_open = False
        if vessel.liquid is not None:
            lq = vessel.liquid
            self.state.do_um = lq.henry_um_per_mmhg * self.o2_mmhg
            self.state.cells_per_ml = lq.cells_per_ml
        if vessel.culture is not None:
            self.state.medium_o2_um = vessel.culture.henry_um_per_mmhg * self.o2_mmhg

    @property
    def o2_mmhg(self) -> float:
        """Headspace O2 partial pressure, mmHg."""
        return self.state.o2_frac * MMHG_PER_ATM

    def advance(
        self,
        dt_s: float,
        n2_lpm: float,
        air_lpm: float,
        o2_lpm: float,
        co2_lpm: float,
        heater_w: float,
    ) -> None:
        """Advance the plant by ``dt_s`` with these commanded flows (L/min) and heater power (W)."""
        s, g = self.state, self.vessel.gas
        f = s.flows
        f.n2_lpm = self._mfc["n2"].mean_flow(n2_lpm, dt_s)
        f.air_lpm = self._mfc["air"].mean_flow(air_lpm, dt_s)
        f.o2_lpm = self._mfc["o2"].mean_flow(o2_lpm, dt_s)
        f.co2_lpm = self._mfc["co2"].mean_flow(co2_lpm, dt_s)
        for gas, q in (("n2", f.n2_lpm), ("air", f.air_lpm), ("o2", f.o2_lpm), ("co2", f.co2_lpm)):
            s.gas_used_l[gas] += q * dt_s / 60.0
        q_door = g.door_exchange_frac * g.volume_l * 60.0 / g.door_tau_s if self.door_open else 0.0
        room = f.air_lpm + g.leak_lpm + q_door
        q_total = f.n2_lpm + f.o2_lpm + f.co2_lpm + room
        if q_total > 0.0:
            decay = math.exp(-q_total * dt_s / 60.0 / g.volume_l)
            x_inf = (room * X_AIR_O2 + f.o2_lpm) / q_total
            c_inf = (room * X_AIR_CO2 + f.co2_lpm) / q_total
            s.o2_frac = x_inf + (s.o2_frac - x_inf) * decay
            s.co2_frac = c_inf + (s.co2_frac - c_inf) * decay
        self._thermal(dt_s, heater_w)
        self._liquid(dt_s)
        self._culture(dt_s)

    def _thermal(self, dt_s: float, heater_w: float) -> None:
        th, s = self.vessel.thermal, self.state
        p = min(max(heater_w, 0.0), th.heater_max_w)
        ua = th.ua_w_per_k + (th.door_ua_w_per_k if self.door_open else 0.0)
        t_inf = th.room_temp_c + p / ua
        s.temp_c = t_inf + (s.temp_c - t_inf) * math.exp(-ua * dt_s / th.heat_capacity_j_per_k)

    def _liquid(self, dt_s: float) -> None:
        lq, s = self.vessel.liquid, self.state
        if lq is None:
            return
        s.cells_per_ml *= math.exp(lq.growth_per_day * dt_s / 86400.0)
        q_um_per_s = s.cells_per_ml * 1e3 * lq.qo2_amol_per_cell_s * 1e-12  # uM/s at saturation
        kla = lq.kla_per_h / 3600.0
        c_star = lq.henry_um_per_mmhg * self.o2_mmhg
        sub = max(1, math.ceil(dt_s / 5.0))
        h = dt_s / sub
        for _ in range(sub):
            uptake = q_um_per_s * s.do_um / (lq.km_um + s.do_um) if s.do_um > 0 else 0.0
            s.do_um = max(0.0, s.do_um + h * (kla * (c_star - s.do_um) - uptake))

    def _culture(self, dt_s: float) -> None:
        cu, s = self.vessel.culture, self.state
        if cu is None:
            return
        c_eq = cu.henry_um_per_mmhg * self.o2_mmhg
        s.medium_o2_um = c_eq + (s.medium_o2_um - c_eq) * math.exp(-dt_s / (60 * cu.tau_medium_min))

    def pericellular_o2_um(self) -> float:
        """Estimated O2 at the cell layer of the static culture, uM (0 without a culture).

        Solves C_p = C_m - a C_p / (Km + C_p), a = sigma q L / D (uptake drop at saturation).
        """
        cu = self.vessel.culture
        if cu is None:
            return 0.0
        flux_mol_m2_s = cu.cells_per_cm2 * 1e4 * cu.ocr_amol_per_cell_s * 1e-18
        a_um = flux_mol_m2_s * cu.depth_mm * 1e-3 / O2_DIFFUSIVITY_M2_S * 1e3  # mol/m3 -> uM
        c_m = self.state.medium_o2_um
        b = cu.km_um + a_um - c_m
        return (-b + math.sqrt(b * b + 4.0 * c_m * cu.km_um)) / 2.0

    def um_to_pct(self, um: float, henry_um_per_mmhg: float) -> float:
        """Dissolved O2 (uM) as the equivalent gas %, i.e. % of 760 mmHg."""
        return um / henry_um_per_mmhg / MMHG_PER_ATM * 100.0
