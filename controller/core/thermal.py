"""Temperature loop (heat balance C dT/dt = P - UA (T - T_room)) and the dissolved-O2 master."""

from __future__ import annotations

from controller.core.loops import BalanceLoop, LoopTuning, PurgeForecast
from controller.core.numeric import clip
from controller.core.process import ProcessModel


class TemperatureLoop(BalanceLoop):
    """Temperature in degC; output ``heater_w`` in 0 .. heater_max_w (W).

    Feed-forward is the loss UA (T_sp - T_room) at the expected room temperature; the integral
    absorbs the difference to the real room and any internal heat load.
    """

    unit = "degC"

    def __init__(self, model: ProcessModel, tuning: LoopTuning) -> None:
        super().__init__(
            model.temp_sensor_t63_s + 0.5 * model.control_period_s, tuning, default_replan=1.0
        )
        self.model = model
        self.heater_w = 0.0

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """Heater power for ``rate_des`` (K/s) at ``operating_point`` (degC)."""
        m = self.model
        loss_w = m.ua_w_per_k * (operating_point - m.room_temp_c)
        self.heater_w = clip(m.heat_capacity_j_per_k * rate_des + loss_w, 0.0, m.heater_max_w)
        return (self.heater_w - loss_w) / m.heat_capacity_j_per_k

    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Full heater (up) or heater off (down): first-order toward the steady temperature."""
        m = self.model
        self.heater_w = m.heater_max_w if up else 0.0
        return PurgeForecast(
            value_inf=m.room_temp_c + self.heater_w / m.ua_w_per_k,
            tau_s=m.heat_capacity_j_per_k / m.ua_w_per_k,
        )

    def actuators_off(self) -> None:
        """Temperature uncontrolled: heater off."""
        self.heater_w = 0.0


class DissolvedO2Loop(BalanceLoop):
    """Master of the bioreactor cascade: dissolved O2 by the headspace O2 set point.

    Dissolved O2 is expressed as the equivalent gas fraction (0..1 of 760 mmHg); the slave is
    :class:`controller.core.gas.O2Loop`.

    Balance in %-equivalent units: dD/dt = kLa (x_hs - D) - OUR. Its "dead time" is the slave
    loop's response plus the DO probe lag.
    """

    unit = "fraction"

    def __init__(self, model: ProcessModel, tuning: LoopTuning, headspace_max: float) -> None:
        liquid = model.liquid
        if liquid is None:
            msg = "DissolvedO2Loop needs a process model with a liquid section"
            raise ValueError(msg)
        slave_s = (
            4.0 * (model.o2_dead_time_s)
            + 60.0 * model.volume_l / max(model.min_through_flow_lpm, 1e-3) * 0.5
        )
        super().__init__(liquid.do_sensor_t63_s + slave_s, tuning, default_replan=0.01)
        self.kla_per_s = liquid.kla_per_h / 3600.0
        sat_um_per_frac = liquid.henry_um_per_mmhg * 760.0
        self.our_frac_per_s = liquid.our_um_per_h / sat_um_per_frac / 3600.0
        self.headspace_max = headspace_max
        self.headspace_sp = 0.0

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """Headspace O2 set point for ``rate_des`` (1/s) at ``operating_point`` (fraction)."""
        x_hs = operating_point + (rate_des + self.our_frac_per_s) / self.kla_per_s
        self.headspace_sp = clip(x_hs, 0.0, self.headspace_max)
        return self.kla_per_s * (self.headspace_sp - operating_point) - self.our_frac_per_s

    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Headspace to its maximum (up) or to pure N2 (down)."""
        self.headspace_sp = self.headspace_max if up else 0.0
        value_inf = self.headspace_sp - self.our_frac_per_s / self.kla_per_s
        return PurgeForecast(value_inf=value_inf, tau_s=1.0 / self.kla_per_s)

    def actuators_off(self) -> None:
        """DO uncontrolled: the headspace loop keeps its own set point."""
