"""Plant physics of a hypoxia chamber or bioreactor: pure, no I/O, deterministic for a seed.

State and balances (docs/physics.md §B):

* headspace O2 and CO2 fractions: V dx/dt = sum of inflows x (x_in - x) + (Q_L + Q_door)(x_a - x),
  solved exactly for flows constant over a step (so a pure-N2 purge is x0 e^(-Qt/V) to rounding);
* MFC lag (first order) or solenoid PWM with a minimum on-time and sigma-delta carry;
* door openings as extra exchange with room air (tau_door, share of the volume exposed);
* heat balance C dT/dt = P - (UA + UA_door)(T - T_room);
* bioreactor medium: dC/dt = kLa (H pO2 - C) - q X C/(Km + C), cells growing exponentially;
* static culture, ``model = "lag"``: medium O2 lags the chamber (tau_medium); pericellular O2 from
  the Michaelis-Menten-limited diffusion drop J L/D (closed-form quadratic);
  ``model = "diffusion"``: 1-D diffusion-reaction through the medium (simulators/diffusion.py,
  §B7), behind an optional lid/vent lag; cell density growing (logistic when capped);
* gas-liquid equilibrium on the O2 partial pressure: x_dry (P_baro - RH p_w(T)), Henry coefficient,
  kLa, uptake and diffusivity at the medium temperature when the vessel has an ``[atmosphere]``
  section (simulators/gas_liquid.py, §B6); without it dry gas at 760 mmHg and 37 degC values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.core.gas import GasFlows
from controller.core.numeric import clip
from controller.core.process import MMHG_PER_ATM, X_AIR_CO2, X_AIR_O2
from simulators import gas_liquid
from simulators.diffusion import MediumLayer, steady_cell_um
from simulators.vessel import AtmosphereSection, Vessel

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
    cells_per_cm2: float = 0.0
    pericellular_um: float = 0.0
    flows: GasFlows = field(default_factory=GasFlows)  # actual mean inflows over the last step
    gas_used_l: dict[str, float] = field(
        default_factory=lambda: {"n2": 0.0, "air": 0.0, "o2": 0.0, "co2": 0.0}
    )


ENV_TOLERANCE_K = 1e-3
"""Temperature change that triggers a recomputation of the §B6 coefficients, K (H moves 1.4 %/K)."""


@dataclass(frozen=True, slots=True)
class _Env:
    """The §B6 coefficients at one temperature (ratios to their 37 degC values)."""

    temp_c: float
    dry_mmhg: float  # P_baro - RH p_w(T): the pressure the dry gas fractions share
    henry: float = 1.0
    kla: float = 1.0
    uptake: float = 1.0
    diffusivity: float = 1.0

    @classmethod
    def at(cls, temp_c: float, atm: AtmosphereSection | None) -> _Env:
        if atm is None:
            return cls(temp_c, MMHG_PER_ATM)
        dry = atm.barometric_mmhg - atm.humidity_frac * gas_liquid.vapour_pressure_mmhg(temp_c)
        if not atm.temperature_dependent:
            return cls(temp_c, dry)
        return cls(
            temp_c,
            dry,
            gas_liquid.o2_henry_ratio(temp_c, atm.salinity),
            gas_liquid.kla_ratio(temp_c, atm.kla_theta),
            gas_liquid.uptake_ratio(temp_c, atm.uptake_q10),
            gas_liquid.diffusivity_ratio(temp_c),
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
        self._decay_dt_s = math.nan  # the step whose exp(-dt/tau) is cached
        self._decay = self._rise = 0.0

    def mean_flow(self, setpoint_lpm: float, dt_s: float) -> float:
        """Advance over ``dt_s`` toward ``setpoint_lpm`` and return the mean flow, L/min."""
        if self.max_lpm <= 0.0:
            return 0.0
        sp = setpoint_lpm
        if not 0.0 <= sp <= self.max_lpm:  # clip() only when outside (rare)
            sp = clip(sp, 0.0, self.max_lpm)
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
        if dt_s != self._decay_dt_s:  # exp() once per step length, not every step
            self._decay_dt_s = dt_s
            self._decay = math.exp(-dt_s / self.tau_s)
            self._rise = 1.0 - self._decay
        decay = self._decay
        mean = sp + (self.flow_lpm - sp) * self.tau_s / dt_s * self._rise
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
        self._mfcs = (self._mfc["n2"], self._mfc["air"], self._mfc["o2"], self._mfc["co2"])
        self._heat_key = (math.nan, math.nan)  # (UA, dt) of the cached heat-balance decay
        self._heat_decay = 1.0
        self.door_open = False
        self._env_cache: _Env | None = None
        if vessel.liquid is not None:
            lq = vessel.liquid
            self.state.do_um = self.henry(lq.henry_um_per_mmhg) * self.o2_mmhg
            self.state.cells_per_ml = lq.cells_per_ml
        self.layer: MediumLayer | None = None
        self.culture_sampled = False
        """True after an :meth:`advance` that updated the culture trajectory (every step_s)."""
        self._culture_clock_s = 0.0
        self._culture_top_sum = 0.0
        if vessel.culture is not None:
            cu = vessel.culture
            c_eq = self.henry(cu.henry_um_per_mmhg) * self.o2_mmhg
            self.state.medium_o2_um = c_eq
            self.state.cells_per_cm2 = cu.cells_per_cm2
            if cu.model == "diffusion":
                self.layer = MediumLayer(cu.depth_mm * 1e-3, cu.nodes, c_eq)
                self.layer.settle(c_eq, self._jmax_um_m_s(), cu.km_um, self._diffusivity())
            self.state.pericellular_um = self.pericellular_o2_um()

    def _env(self) -> _Env:
        """Temperature-dependent coefficients, recomputed when T moved by more than 1 mK."""
        t = self.state.temp_c
        env = self._env_cache
        if env is None or abs(t - env.temp_c) > ENV_TOLERANCE_K:
            env = self._env_cache = _Env.at(t, self.vessel.atmosphere)
        return env

    @property
    def o2_mmhg(self) -> float:
        """Headspace O2 partial pressure, mmHg (dry gas at 760 mmHg without ``[atmosphere]``)."""
        if self.vessel.atmosphere is None:
            return self.state.o2_frac * MMHG_PER_ATM
        return self.state.o2_frac * self._env().dry_mmhg

    def henry(self, henry_37_um_per_mmhg: float) -> float:
        """Henry coefficient at the medium (= chamber) temperature, uM/mmHg (§B6)."""
        if self.vessel.atmosphere is None:
            return henry_37_um_per_mmhg
        return henry_37_um_per_mmhg * self._env().henry

    def _ratio(self, kind: str) -> float:
        if self.vessel.atmosphere is None:
            return 1.0
        env = self._env()
        return env.kla if kind == "kla" else env.uptake if kind == "uptake" else env.diffusivity

    def _diffusivity(self) -> float:
        cu = self.vessel.culture
        return (cu.diffusivity_m2_s if cu is not None else O2_DIFFUSIVITY_M2_S) * self._ratio("d")

    def _jmax_um_m_s(self) -> float:
        """Maximum uptake flux of the cell layer, uM m/s (mmol/m^2/s)."""
        cu = self.vessel.culture
        if cu is None:
            return 0.0
        per_cell = cu.ocr_amol_per_cell_s * 1e-18 * self._ratio("uptake")  # mol/s
        return self.state.cells_per_cm2 * 1e4 * per_cell * 1e3

    def gas_reading(self, frac: float, basis: str) -> float:
        """A gas fraction as a sensor of ``basis`` reports it, % (§B6; converted once, here)."""
        atm = self.vessel.atmosphere
        if basis == "dry_pct" or atm is None:
            return 100.0 * frac
        p_gas = frac * self._env().dry_mmhg
        if basis == "wet_pct":
            return 100.0 * p_gas / atm.barometric_mmhg
        return 100.0 * p_gas / MMHG_PER_ATM

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
        f, used = s.flows, s.gas_used_l
        mfc_n2, mfc_air, mfc_o2, mfc_co2 = self._mfcs
        f.n2_lpm = q_n = mfc_n2.mean_flow(n2_lpm, dt_s)
        f.air_lpm = q_a = mfc_air.mean_flow(air_lpm, dt_s)
        f.o2_lpm = q_o = mfc_o2.mean_flow(o2_lpm, dt_s)
        f.co2_lpm = q_c = mfc_co2.mean_flow(co2_lpm, dt_s)
        used["n2"] += q_n * dt_s / 60.0
        used["air"] += q_a * dt_s / 60.0
        used["o2"] += q_o * dt_s / 60.0
        used["co2"] += q_c * dt_s / 60.0
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
        p = clip(heater_w, 0.0, th.heater_max_w)
        ua = th.ua_w_per_k + (th.door_ua_w_per_k if self.door_open else 0.0)
        t_inf = th.room_temp_c + p / ua
        if self._heat_key != (ua, dt_s):  # exp() only when the door or the step changes
            self._heat_key = (ua, dt_s)
            self._heat_decay = math.exp(-ua * dt_s / th.heat_capacity_j_per_k)
        s.temp_c = t_inf + (s.temp_c - t_inf) * self._heat_decay

    def _liquid(self, dt_s: float) -> None:
        lq, s = self.vessel.liquid, self.state
        if lq is None:
            return
        if lq.growth_per_day != 0.0:
            s.cells_per_ml = grow(s.cells_per_ml, lq.growth_per_day, lq.max_cells_per_ml, dt_s)
        q_um_per_s = s.cells_per_ml * 1e3 * lq.qo2_amol_per_cell_s * 1e-12  # uM/s at saturation
        kla = lq.kla_per_h / 3600.0
        c_star = lq.henry_um_per_mmhg * self.o2_mmhg
        if self.vessel.atmosphere is not None:
            q_um_per_s *= self._ratio("uptake")
            kla *= self._ratio("kla")
            c_star = self.henry(lq.henry_um_per_mmhg) * self.o2_mmhg
        sub = max(1, math.ceil(dt_s / 5.0))
        h = dt_s / sub
        for _ in range(sub):
            uptake = q_um_per_s * s.do_um / (lq.km_um + s.do_um) if s.do_um > 0 else 0.0
            s.do_um = max(0.0, s.do_um + h * (kla * (c_star - s.do_um) - uptake))

    def _culture(self, dt_s: float) -> None:
        cu, s = self.vessel.culture, self.state
        self.culture_sampled = False
        if cu is None:
            return
        if cu.growth_per_day != 0.0:
            s.cells_per_cm2 = grow(s.cells_per_cm2, cu.growth_per_day, cu.max_cells_per_cm2, dt_s)
        if self.vessel.atmosphere is None:
            c_eq = cu.henry_um_per_mmhg * (s.o2_frac * MMHG_PER_ATM)
        else:
            c_eq = self.henry(cu.henry_um_per_mmhg) * self.o2_mmhg
        layer = self.layer
        if layer is None:
            decay = math.exp(-dt_s / (60 * cu.tau_medium_min))
            s.medium_o2_um = c_eq + (s.medium_o2_um - c_eq) * decay
        else:
            if cu.vent_tau_min > 0.0:
                decay = math.exp(-dt_s / (60 * cu.vent_tau_min))
                c_eq = c_eq + (s.medium_o2_um - c_eq) * decay
            s.medium_o2_um = c_eq  # O2 at the medium surface
            self._culture_top_sum += c_eq * dt_s
        self._culture_clock_s += dt_s
        if self._culture_clock_s < cu.diffusion_step_s - 1e-9:
            return
        step = self._culture_clock_s
        if layer is not None:
            top = self._culture_top_sum / step
            layer.step(step, top, self._diffusivity(), self._jmax_um_m_s(), cu.km_um)
            self._culture_top_sum = 0.0
        self._culture_clock_s = 0.0
        s.pericellular_um = self.pericellular_o2_um()
        self.culture_sampled = True

    def pericellular_o2_um(self) -> float:
        """Estimated O2 at the cell layer of the static culture, uM (0 without a culture).

        Diffusion model: the cell-layer node of the medium profile. Lag model: solves
        C_p = C_m - a C_p / (Km + C_p), a = sigma q L / D (uptake drop at saturation).
        """
        cu = self.vessel.culture
        if cu is None:
            return 0.0
        if self.layer is not None:
            return self.layer.cell_um
        a_um = self._jmax_um_m_s() * cu.depth_mm * 1e-3 / self._diffusivity()
        return steady_cell_um(self.state.medium_o2_um, a_um, cu.km_um)

    def pericellular_o2_pct(self) -> float:
        """Pericellular O2 as the equivalent gas % (% of 760 mmHg at the medium's Henry)."""
        cu = self.vessel.culture
        if cu is None:
            return float("nan")
        return self.um_to_pct(self.pericellular_o2_um(), self.henry(cu.henry_um_per_mmhg))

    def um_to_pct(self, um: float, henry_um_per_mmhg: float) -> float:
        """Dissolved O2 (uM) as the equivalent gas %, i.e. % of 760 mmHg."""
        return um / henry_um_per_mmhg / MMHG_PER_ATM * 100.0


def grow(cells: float, rate_per_day: float, cap: float | None, dt_s: float) -> float:
    """Cell density after ``dt_s``: exponential, or logistic toward ``cap`` (exact per step)."""
    g = math.exp(rate_per_day * dt_s / 86400.0)
    if cap is None or cells <= 0.0:
        return cells * g
    return cap / (1.0 + (cap / cells - 1.0) / g)
