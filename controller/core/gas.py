"""Headspace gas loops: O2 (split range N2 / air / O2) and CO2 (ratio feed-forward plus trim).

Both loops write into one shared :class:`GasFlows`, the O2 loop first. The CO2 loop then sees the
N2 and air flows of the same cycle, which is the ratio feed-forward that keeps CO2 steady during
N2 purges (docs/physics.md §B3); the O2 loop sees the CO2 flow of the previous cycle, since
CO2 dilutes O2 too.

Both balances use the loop's ``volume_l`` and ``leak_lpm``, which start at the process model's
values and follow the observer's adapted estimates when the controller has one. In tracking each
loop holds its MFC set points while the wanted change stays inside a dead band
(``dead_band_rate``, a rate in 1/s set from the observer's uncertainty, converted to L/min per
branch through the balance), so sensor noise does not move the MFCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.core.loops import BalanceLoop, LoopTuning, PurgeForecast
from controller.core.numeric import clip
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


def o2_rate_per_s(
    model: ProcessModel,
    x: float,
    flows: GasFlows,
    volume_l: float | None = None,
    leak_lpm: float | None = None,
) -> float:
    """dx/dt of the O2 fraction for these inflows at fraction ``x`` (1/s), leak included.

    ``volume_l`` and ``leak_lpm`` override the model's (adapted values).
    """
    q_l = model.leak_lpm if leak_lpm is None else leak_lpm
    vol = model.volume_l if volume_l is None else volume_l
    per_min = (
        (flows.air_lpm + q_l) * (X_AIR_O2 - x)
        + flows.o2_lpm * (1.0 - x)
        - (flows.n2_lpm + flows.co2_lpm) * x
    ) / vol
    return per_min / 60.0


class _GasLoop(BalanceLoop):
    """What both gas loops share: adapted volume and leak, MFC lag, MFC dead band."""

    def __init__(
        self,
        model: ProcessModel,
        flows: GasFlows,
        tuning: LoopTuning,
        dead_time_s: float,
        default_replan: float,
    ) -> None:
        super().__init__(dead_time_s, tuning, default_replan, actuator_lag_s=model.mfc_tau_s)
        self.model = model
        self.flows = flows
        self.volume_l = model.volume_l
        self.leak_lpm = model.leak_lpm
        self.dead_band_rate = 0.0
        self.dead_band_error = 0.0
        self.dead_band_max_fs = 0.05
        self.dead_band_min_fs = 0.0
        self.held: list[float] | None = None

    def _outputs(self) -> list[float]:
        raise NotImplementedError

    def _set_outputs(self, values: list[float]) -> None:
        raise NotImplementedError

    def _band_lpm(self) -> list[float]:
        """Dead band per output, L/min: ``dead_band_rate`` through the balance at the reference."""
        raise NotImplementedError

    def _full_scale(self) -> list[float]:
        """Full scale of each output, L/min."""
        raise NotImplementedError

    def settle(self, error: float) -> None:
        """Hold the MFC set points while the wanted change is noise.

        Held while the error is within ``dead_band_error`` and every wanted change is inside its
        dead band (between ``dead_band_min_fs`` and ``dead_band_max_fs`` of the MFC's full scale).
        """
        want = self._outputs()
        if (
            self.held is not None
            and self.dead_band_rate > 0.0
            and abs(error) <= self.dead_band_error
        ):
            bands = self._band_lpm()
            caps = self._full_scale()
            lo, hi = self.dead_band_min_fs, self.dead_band_max_fs
            held = self.held
            for i, w in enumerate(want):  # every wanted change inside its band?
                band, cap = bands[i], caps[i]
                floor, top = lo * cap, hi * cap
                if not floor <= band <= top:  # clip() only when outside
                    band = clip(band, floor, top)
                if not abs(w - held[i]) <= band:
                    break
            else:
                self._set_outputs(held)
                return
        self.held = want

    def release(self) -> None:
        """Forget the held set points."""
        self.held = None

    def snapshot(self) -> dict[str, Any]:
        """Loop state plus the held MFC set points, the dead band and the adapted parameters."""
        data = super().snapshot()
        data.update(
            held=None if self.held is None else list(self.held),
            dead_band_rate=self.dead_band_rate,
            dead_band_error=self.dead_band_error,
            volume_l=self.volume_l,
            leak_lpm=self.leak_lpm,
        )
        return data

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` (older snapshots: nothing held, model parameters)."""
        super().restore(data)
        held = data.get("held")
        self.held = None if held is None else [float(v) for v in held]
        self.dead_band_rate = float(data.get("dead_band_rate", 0.0))
        self.dead_band_error = float(data.get("dead_band_error", 0.0))
        self.volume_l = float(data.get("volume_l", self.model.volume_l))
        self.leak_lpm = float(data.get("leak_lpm", self.model.leak_lpm))


class O2Loop(_GasLoop):
    """Headspace O2 fraction (0..1) by split range: N2 lowers, air (then O2) raises.

    N2 and air are never commanded together, except the neutral air/N2 mix that keeps a minimum
    through-flow (bioreactor overlay), which leaves the O2 balance unchanged.
    """

    unit = "fraction"

    def __init__(self, model: ProcessModel, flows: GasFlows, tuning: LoopTuning) -> None:
        super().__init__(model, flows, tuning, model.o2_dead_time_s, default_replan=0.003)

    def _outputs(self) -> list[float]:
        f = self.flows
        return [f.n2_lpm, f.air_lpm, f.o2_lpm]

    def _set_outputs(self, values: list[float]) -> None:
        self.flows.n2_lpm, self.flows.air_lpm, self.flows.o2_lpm = values

    def _full_scale(self) -> list[float]:
        m = self.model
        return [m.n2_max_lpm, m.air_max_lpm, m.o2_max_lpm]

    def _band_lpm(self) -> list[float]:
        x = clip(self.ref.value, 1e-6, 1.0 - 1e-6)
        per_rate = 60.0 * self.volume_l * self.dead_band_rate
        return [per_rate / x, per_rate / max(X_AIR_O2 - x, 1e-6), per_rate / (1.0 - x)]

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """Split-range allocation from the exact O2 balance at ``operating_point``."""
        m, f = self.model, self.flows
        x = clip(operating_point, 1e-6, 1.0 - 1e-6)
        # Q_A (x_a - x) + Q_O (1 - x) - Q_N x = w  (what the actuators must add to the leak)
        w = self.volume_l * rate_des * 60.0 - self.leak_lpm * (X_AIR_O2 - x) + f.co2_lpm * x
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
        return o2_rate_per_s(m, x, f, self.volume_l, self.leak_lpm)

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
        q_total = f.total_lpm + self.leak_lpm
        x_inf = ((f.air_lpm + self.leak_lpm) * X_AIR_O2 + f.o2_lpm) / q_total
        return PurgeForecast(value_inf=x_inf, tau_s=60.0 * self.volume_l / q_total)

    def actuators_off(self) -> None:
        """O2 uncontrolled: N2, air and O2 closed."""
        self.flows.n2_lpm = self.flows.air_lpm = self.flows.o2_lpm = 0.0


class Co2Loop(_GasLoop):
    """Headspace CO2 fraction (0..1) by the CO2 MFC; dilution by other inflows is fed forward."""

    unit = "fraction"

    def __init__(self, model: ProcessModel, flows: GasFlows, tuning: LoopTuning) -> None:
        super().__init__(model, flows, tuning, model.co2_dead_time_s, default_replan=0.005)

    def _outputs(self) -> list[float]:
        return [self.flows.co2_lpm]

    def _set_outputs(self, values: list[float]) -> None:
        (self.flows.co2_lpm,) = values

    def _full_scale(self) -> list[float]:
        return [self.model.co2_max_lpm]

    def _band_lpm(self) -> list[float]:
        c = clip(self.ref.value, 0.0, 0.99)
        return [60.0 * self.volume_l * self.dead_band_rate / (1.0 - c)]

    def _dilution_lpm(self) -> float:
        f = self.flows
        return f.n2_lpm + f.air_lpm + f.o2_lpm + self.leak_lpm

    def allocate(self, operating_point: float, rate_des: float) -> float:
        """CO2 flow from the exact CO2 balance at ``operating_point``: ratio FF plus trim."""
        m, f = self.model, self.flows
        c = clip(operating_point, 0.0, 0.99)
        q_c = (self.volume_l * rate_des * 60.0 + self._dilution_lpm() * c) / (1.0 - c)
        f.co2_lpm = clip(q_c, 0.0, m.co2_max_lpm)
        return (f.co2_lpm * (1.0 - c) - self._dilution_lpm() * c) / self.volume_l / 60.0

    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Full CO2 (up) or none (down, CO2 then falls by dilution only)."""
        m, f = self.model, self.flows
        f.co2_lpm = m.co2_max_lpm if up else 0.0
        q_total = f.co2_lpm + self._dilution_lpm()
        if q_total <= 0.0:
            return None
        return PurgeForecast(value_inf=f.co2_lpm / q_total, tau_s=60.0 * self.volume_l / q_total)

    def actuators_off(self) -> None:
        """CO2 uncontrolled: CO2 closed."""
        self.flows.co2_lpm = 0.0
