"""Generic first-order balance loop: reference, PI with anti-windup, time-optimal moves.

Every loop here controls a quantity whose balance is first order in the actuator:
headspace O2 and CO2 (gas mass balance), chamber temperature (heat balance) and dissolved O2
(gas-liquid transfer). Each is *exactly linearised* by its allocation: the feedback asks for a rate
of change ``rate_des`` (units per s) and the subclass turns it into actuator outputs through the
balance equation evaluated at the reference, so the loop sees a pure integrator whatever the
set point. That one step gives mass-balance feed-forward (the steady part of the balance),
gain scheduling by set point (the balance divides by the operating point) and a bumpless,
set-point-independent PI tuned once by SIMC for an integrating process.

Moves requested as "fastest" run the time-optimal law of docs/control.md §D3.2: full
actuation (a *purge*) until the value predicted past the loop's dead time reaches the target,
then hand over to tracking with the sensor-lagged reference so that the still-falling reading is
not mistaken for an error. A large disturbance (door opening) in tracking re-plans a purge.

A loop given an *estimate* of the controlled value now (the headspace observer,
:mod:`controller.core.observer`) controls on that estimate instead of the filtered reading: the
reference needs no sensor lag, the purge predicts one control period ahead with the actuators'
own lag and lands on the target in its last period (a predicted, MPC-style hand-over), and the
re-plan decision is made on the chamber value, not on the lagged reading. In tracking the
subclass may hold its actuators inside a dead band (:meth:`BalanceLoop.settle`) so that noise
does not move them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.core.loop_tuning import LoopTuning

__all__ = ["PI", "PURGING", "BalanceLoop", "LoopMode", "LoopTuning", "PurgeForecast", "Reference"]


class LoopMode(StrEnum):
    """What a loop is doing in this cycle."""

    OFF = "off"
    TRACK = "track"
    PURGE_DOWN = "purge_down"
    PURGE_UP = "purge_up"
    HOLD_SAFE = "hold_safe"


PURGING = (LoopMode.PURGE_DOWN, LoopMode.PURGE_UP)
"""The modes of a loop at full actuation (a module constant: checked every cycle)."""


@dataclass(frozen=True, slots=True)
class PurgeForecast:
    """Where a full-actuation move is heading: first-order toward ``value_inf`` with ``tau_s``."""

    value_inf: float
    tau_s: float


class PI:
    """PI on the linearised loop with back-calculation anti-windup.

    The output is a rate (units/s). ``advance`` integrates the error and pulls the integral back
    by the part of the request the actuators could not deliver (tracking time ``tt_s``).
    """

    def __init__(self, kp_per_s: float, ti_s: float, tt_s: float | None = None) -> None:
        self.kp_per_s = kp_per_s
        self.ti_s = ti_s
        self.tt_s = tt_s if tt_s is not None else ti_s
        self.integral = 0.0

    def output(self, error: float) -> float:
        """Proportional plus integral action for ``error`` (units), as a rate in units/s."""
        return self.kp_per_s * error + self.integral

    def advance(self, error: float, dt_s: float, unmet_rate: float) -> None:
        """Integrate ``error`` over ``dt_s``; ``unmet_rate`` = applied - requested rate."""
        self.integral += self.kp_per_s * error * dt_s / self.ti_s + unmet_rate * dt_s / self.tt_s


class Reference:
    """Set-point trajectory: the planned plant value and what its sensor is expected to read.

    Attributes:
        target: Final set point (loop units) or ``None`` when the loop is off.
        value: Planned plant value now.
        rate_per_s: Ramp rate toward the target (units/s, positive); ``inf`` means a step.
        sensed: ``value`` passed through the loop's dead time, modelled as a first-order lag.
    """

    def __init__(self, lag_s: float) -> None:
        self.lag_s = lag_s
        self.target: float | None = None
        self.value = 0.0
        self.rate_per_s = math.inf
        self.sensed = 0.0
        self.slope_per_s = 0.0
        self._alpha_key = (math.nan, math.nan)  # (dt_s, lag_s) of the cached lag coefficient
        self._alpha = 1.0

    def advance(self, dt_s: float) -> None:
        """Move ``value`` toward the target at the ramp rate and update ``sensed``."""
        if self.target is None:
            self.slope_per_s = 0.0
            return
        gap = self.target - self.value
        most = self.rate_per_s * dt_s
        size = abs(gap)
        step = math.copysign(most if most < size else size, gap)  # min(|gap|, rate dt)
        self.value += step
        self.slope_per_s = step / dt_s if dt_s > 0 else 0.0
        if self._alpha_key != (dt_s, self.lag_s):  # exp() only when the period or lag changes
            self._alpha_key = (dt_s, self.lag_s)
            self._alpha = 1.0 - math.exp(-dt_s / self.lag_s) if self.lag_s > 0 else 1.0
        self.sensed += (self.value - self.sensed) * self._alpha


class BalanceLoop(ABC):
    """One loop: measurement filter, reference, PI, purge logic; the subclass allocates.

    Subclasses implement :meth:`allocate` (rate request -> actuator outputs, returning the rate
    actually achievable) and :meth:`full_actuation` (where full actuation up or down leads).
    """

    unit = ""

    def __init__(
        self,
        dead_time_s: float,
        tuning: LoopTuning,
        default_replan: float,
        actuator_lag_s: float = 0.0,
    ) -> None:
        self.tuning = tuning
        self.actuator_lag_s = actuator_lag_s
        self.dead_time_s = dead_time_s + tuning.filter_s
        tau_c = tuning.tau_c_factor * self.dead_time_s
        kp = tuning.kp_per_s if tuning.kp_per_s is not None else 1.0 / (tau_c + self.dead_time_s)
        ti = tuning.ti_s if tuning.ti_s is not None else 4.0 * (tau_c + self.dead_time_s)
        self.pi = PI(kp, ti)
        self.ref = Reference(self.dead_time_s)
        self.replan = tuning.replan if tuning.replan is not None else default_replan
        self.mode = LoopMode.OFF
        self.filtered: float | None = None
        self._pending_fastest = False

    # ----------------------------------------------------------------------------- subclass API
    @abstractmethod
    def allocate(self, operating_point: float, rate_des: float) -> float:
        """Set the actuators for ``rate_des`` (units/s) at ``operating_point``.

        Returns:
            The rate the clipped actuators achieve, units/s.
        """

    @abstractmethod
    def full_actuation(self, up: bool) -> PurgeForecast | None:
        """Drive the actuators fully up or down.

        Returns:
            Where that leads, or ``None`` if the plant cannot move that way (no actuator).
        """

    @abstractmethod
    def actuators_off(self) -> None:
        """Put the loop's actuators at rest (loop disabled)."""

    def settle(self, error: float) -> None:  # noqa: B027 - optional hook, no dead band by default
        """Tracking only: hold the actuators inside their dead band (default: no dead band).

        Args:
            error: The loop's error this cycle (reference minus controlled value), loop units.
        """

    def release(self) -> None:  # noqa: B027 - optional hook
        """Forget the held actuator values (the next tracking command is applied as is)."""

    # ------------------------------------------------------------------------------ public API
    def set_target(self, target: float | None, rate_per_s: float | None) -> None:
        """Aim at ``target`` (``None`` switches the loop off).

        Args:
            target: New set point in loop units.
            rate_per_s: Ramp rate (units/s); ``None`` asks for the fastest physical move.
        """
        if target == self.ref.target and target is not None:
            return
        self.ref.target = target
        if target is None:
            self.mode = LoopMode.OFF
            return
        start = self.filtered if self.filtered is not None else target
        if self.mode in (LoopMode.OFF, LoopMode.PURGE_DOWN, LoopMode.PURGE_UP):
            self.ref.value = start
            self.ref.sensed = start
        if rate_per_s is None:
            self.ref.rate_per_s = math.inf
            self._pending_fastest = True
        else:
            self.ref.rate_per_s = rate_per_s
            self._pending_fastest = False
        self.mode = LoopMode.TRACK

    def follow(self, target: float) -> None:
        """Cascade slave: take a new set point every cycle without re-planning a move."""
        if self.ref.target is None:
            self.set_target(target, math.inf)
        self.ref.target = target
        self.ref.value = target
        self.ref.rate_per_s = math.inf
        self._pending_fastest = False
        if self.mode is LoopMode.OFF:
            self.mode = LoopMode.TRACK

    def update(self, dt_s: float, measured: float | None, estimate: float | None = None) -> None:
        """Run one cycle; ``measured`` is ``None`` when the reading cannot be trusted.

        Args:
            dt_s: Control period, s.
            measured: The reading in loop units, ``None`` when untrusted.
            estimate: The controlled value *now* from an observer (no sensor delay or lag);
                when given the loop controls on it (the measurement filter is bypassed).
        """
        if self.ref.target is None:
            self.release()
            self.actuators_off()
            return
        if measured is None:
            self._hold_safe(dt_s)
            return
        observed = estimate is not None and math.isfinite(estimate)
        if observed:
            assert estimate is not None  # noqa: S101 - narrowed for mypy
            y = self.filtered = estimate
        else:
            y = self._filter(dt_s, measured)
        if self.mode is LoopMode.HOLD_SAFE:
            self.mode = LoopMode.TRACK
            self.ref.sensed = y
        if self._pending_fastest:
            self._pending_fastest = False
            self._start_move(y, self.ref.target)
        if self.mode in PURGING:
            if observed:
                self._purge_predicted(dt_s, y, self.ref.target)
                return
            if not self._purge(y, self.ref.target):
                return
        self._track(dt_s, y, self.ref.target, observed)

    def snapshot(self) -> dict[str, Any]:
        """Loop state for the run journal: mode, filter, reference and integral."""
        r = self.ref
        return {
            "mode": self.mode.value,
            "filtered": self.filtered,
            "integral": self.pi.integral,
            "pending_fastest": self._pending_fastest,
            "target": r.target,
            "value": r.value,
            "rate_per_s": None if math.isinf(r.rate_per_s) else r.rate_per_s,
            "sensed": r.sensed,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` (bumpless: same integral, reference and mode)."""
        self.mode = LoopMode(data["mode"])
        self.filtered = data["filtered"]
        self.pi.integral = float(data["integral"])
        self._pending_fastest = bool(data["pending_fastest"])
        self.ref.target = data["target"]
        self.ref.value = float(data["value"])
        rate = data["rate_per_s"]
        self.ref.rate_per_s = math.inf if rate is None else float(rate)
        self.ref.sensed = float(data["sensed"])

    # ---------------------------------------------------------------------------- internals
    def _filter(self, dt_s: float, measured: float) -> float:
        if self.filtered is None or self.tuning.filter_s <= 0:
            self.filtered = measured
        else:
            alpha = 1.0 - math.exp(-dt_s / self.tuning.filter_s)
            self.filtered += (measured - self.filtered) * alpha
        return self.filtered

    def _start_move(self, y: float, target: float) -> None:
        gap = target - y
        if abs(gap) <= self.replan / 3.0:
            self.ref.value = target
            return
        self.mode = LoopMode.PURGE_UP if gap > 0 else LoopMode.PURGE_DOWN

    def _purge(self, y: float, target: float) -> bool:
        """One purge cycle at full actuation; True once the purge has ended (hand over)."""
        up = self.mode is LoopMode.PURGE_UP
        forecast = self.full_actuation(up)
        if forecast is None:
            self._end_purge(y, target)
            return True
        decay = math.exp(-self.dead_time_s / forecast.tau_s) if forecast.tau_s > 0 else 0.0
        predicted = forecast.value_inf + (y - forecast.value_inf) * decay
        reached = predicted >= target if up else predicted <= target
        if reached:
            self._end_purge(y, target)
        return reached

    def _end_purge(self, y: float, target: float) -> None:
        self.mode = LoopMode.TRACK
        self.ref.value = target
        self.ref.sensed = y

    def _purge_predicted(self, dt_s: float, x: float, target: float) -> None:
        """One purge period on the observer's estimate ``x`` of the value now.

        Full actuation while the value, one period ahead plus what the actuators' lag still
        delivers after a cut (rate x lag), has not reached the target; in the last period the
        rate that lands exactly on the target, then tracking (docs/control.md §D3.2).
        """
        up = self.mode is LoopMode.PURGE_UP
        self.release()
        forecast = self.full_actuation(up)
        if forecast is None or forecast.tau_s <= 0.0:
            self._end_purge(x, target)
            self.ref.sensed = target
            self.allocate(target, 0.0)
            return
        rate_full = (forecast.value_inf - x) / forecast.tau_s
        tail = rate_full * self.actuator_lag_s
        x_next = forecast.value_inf + (x - forecast.value_inf) * math.exp(-dt_s / forecast.tau_s)
        reach = x_next + tail
        if (reach < target) if up else (reach > target):
            return
        rate = (target - x - tail) / dt_s
        rate = max(rate, 0.0) if up else min(rate, 0.0)  # never reverse to land
        self.mode = LoopMode.TRACK
        self.ref.value = self.ref.sensed = target
        self.allocate(x, rate)

    def _track(self, dt_s: float, y: float, target: float, observed: bool = False) -> None:
        ref, pi = self.ref, self.pi
        ref.advance(dt_s)
        if observed:
            ref.sensed = ref.value
        error = ref.sensed - y
        if abs(error) > self.replan and abs(target - ref.value) < 1e-12:
            up = error > 0
            if self.full_actuation(up) is not None:
                self.mode = LoopMode.PURGE_UP if up else LoopMode.PURGE_DOWN
                self.release()
                return
        rate_des = ref.slope_per_s + (pi.kp_per_s * error + pi.integral)  # pi.output(error)
        applied = self.allocate(ref.value, rate_des)
        pi.advance(error, dt_s, applied - rate_des)
        self.settle(error)

    def _hold_safe(self, dt_s: float) -> None:
        """Untrusted reading: hold the feed-forward for the planned value, freeze the integral."""
        self.mode = LoopMode.HOLD_SAFE
        self.release()
        self.ref.advance(dt_s)
        self.allocate(self.ref.value, self.ref.slope_per_s + self.pi.integral)
