"""Headspace gas loops: O2 (split range N2 / air / O2) and CO2 (ratio feed-forward plus trim).

Both loops write into one shared :class:`GasFlows`, the O2 loop first. The CO2 loop then sees the
N2 and air flows of the same cycle, which is the ratio feed-forward that keeps CO2 steady during
N2 purges (docs/physics.md §B3); the O2 loop sees the CO2 flow of the previous cycle, since
CO2 dilutes O2 too.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.core.loops import BalanceLoop, LoopTuning, PurgeForecast
from controller.core.process import X_AIR_O2, ProcessModel


@dataclass(slots=True)
class GasFlows:
    """Commanded gas inflows, L/min (each 0 .. its MFC maximum)."""

    n2_lpm: float = 0.0
    air_lpm: float = 0.0
    o2_lpm: float = 0.0
    co2_lpm: float = 0.0

    @property
    def total_lpm(self) -> float:
        """Sum of all inflows, L/min."""
        return self.n2_lpm + self.air_lpm + self.o2_lpm + self.co2_lpm


def o2_rate_per_s(model: ProcessModel, x: float, flows: GasFlows) -> float:
    """dx/dt of the O2 fraction for these inflows at fraction ``x`` (1/s), leak included."""
    q_l = model.leak_lpm
    per_min = (
        (flows.air_lpm + q_l) * (X_AIR_O2 - x)
        + flows.o2_lpm * (1.0 - x)
        - (flows.n2_lpm + flows.co2_lpm) * x
    ) / model.volume_l
    return per_min / 60.0


class O2Loop(BalanceLoop):
    """Headspace O2 fraction (0..1) by split range: N2 lowers, air (then O2) raises.

    N2 and air are never commanded together, except the neutral air/N2 mix that keeps a minimum
    through-flow (bioreactor overlay), which leaves the O2 balance unchanged.
    """

    unit = "fraction"

    def __init__(self, model: ProcessModel, flows: GasFlows, tuning: LoopTuning) -> None:
        super().__init__(model.o2_dead_time_s, tuning, default_replan=0.003)
        self.model = model
        self.flows = flows

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """Split-range allocation from the exact O2 balance at ``operating_point``."""
        m, f = self.model, self.flows
        x = min(max(operating_point, 1e-6), 1.0 - 1e-6)
        # Q_A (x_a - x) + Q_O (1 - x) - Q_N x = w  (what the actuators must add to the leak)
        w = m.volume_l * rate_des * 60.0 - m.leak_lpm * (X_AIR_O2 - x) + f.co2_lpm * x
        f.n2_lpm = f.air_lpm = f.o2_lpm = 0.0
        if w < 0.0:
            f.n2_lpm = min(-w / x, m.n2_max_lpm)
        elif w > 0.0:
            if m.air_max_lpm > 0.0 and x < X_AIR_O2:
                f.air_lpm = min(w / (X_AIR_O2 - x), m.air_max_lpm)
                w -= f.air_lpm * (X_AIR_O2 - x)
            if w > 1e-12 and m.o2_max_lpm > 0.0:
                f.o2_lpm = min(w / (1.0 - x), m.o2_max_lpm)
        self._keep_through_flow(x)
        return o2_rate_per_s(m, x, f)

    def _keep_through_flow(self, x: float) -> None:
        """Top the inflow up to the minimum with a mix that does not move O2 (same O2 as x)."""
        m, f = self.model, self.flows
        short = m.min_through_flow_lpm - f.total_lpm
        if short <= 0.0:
            return
        if x <= X_AIR_O2 and m.air_max_lpm > 0.0:
            air_share = x / X_AIR_O2
            f.air_lpm = min(f.air_lpm + air_share * short, m.air_max_lpm)
            f.n2_lpm = min(f.n2_lpm + (1.0 - air_share) * short, m.n2_max_lpm)
        elif x > X_AIR_O2 and m.o2_max_lpm > 0.0 and m.air_max_lpm > 0.0:
            o2_share = (x - X_AIR_O2) / (1.0 - X_AIR_O2)
            f.o2_lpm = min(f.o2_lpm + o2_share * short, m.o2_max_lpm)
            f.air_lpm = min(f.air_lpm + (1.0 - o2_share) * short, m.air_max_lpm)

    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Full N2 (down) or full air and O2 (up); forecast of the first-order approach."""
        m, f = self.model, self.flows
        f.n2_lpm = f.air_lpm = f.o2_lpm = 0.0
        if up:
            if m.air_max_lpm <= 0.0 and m.o2_max_lpm <= 0.0:
                return None
            f.air_lpm, f.o2_lpm = m.air_max_lpm, m.o2_max_lpm
        else:
            f.n2_lpm = m.n2_max_lpm
        q_total = f.total_lpm + m.leak_lpm
        x_inf = ((f.air_lpm + m.leak_lpm) * X_AIR_O2 + f.o2_lpm) / q_total
        return PurgeForecast(value_inf=x_inf, tau_s=60.0 * m.volume_l / q_total)

    def actuators_off(self) -> None:
        """O2 uncontrolled: N2, air and O2 closed."""
        self.flows.n2_lpm = self.flows.air_lpm = self.flows.o2_lpm = 0.0


class Co2Loop(BalanceLoop):
    """Headspace CO2 fraction (0..1) by the CO2 MFC; dilution by other inflows is fed forward."""

    unit = "fraction"

    def __init__(self, model: ProcessModel, flows: GasFlows, tuning: LoopTuning) -> None:
        super().__init__(model.co2_dead_time_s, tuning, default_replan=0.005)
        self.model = model
        self.flows = flows

    def _dilution_lpm(self) -> float:
        f = self.flows
        return f.n2_lpm + f.air_lpm + f.o2_lpm + self.model.leak_lpm

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """CO2 flow from the exact CO2 balance at ``operating_point``: ratio FF plus trim."""
        m, f = self.model, self.flows
        c = min(max(operating_point, 0.0), 0.99)
        q_c = (m.volume_l * rate_des * 60.0 + self._dilution_lpm() * c) / (1.0 - c)
        f.co2_lpm = min(max(q_c, 0.0), m.co2_max_lpm)
        return (f.co2_lpm * (1.0 - c) - self._dilution_lpm() * c) / m.volume_l / 60.0

    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Full CO2 (up) or none (down, CO2 then falls by dilution only)."""
        m, f = self.model, self.flows
        f.co2_lpm = m.co2_max_lpm if up else 0.0
        q_total = f.co2_lpm + self._dilution_lpm()
        if q_total <= 0.0:
            return None
        return PurgeForecast(value_inf=f.co2_lpm / q_total, tau_s=60.0 * m.volume_l / q_total)

    def actuators_off(self) -> None:
        """CO2 uncontrolled: CO2 closed."""
        self.flows.co2_lpm = 0.0
