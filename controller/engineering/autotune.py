"""Relay autotuning (Åström-Hägglund 1984) of the exactly linearised balance loops.

Why the relay acts on *rates*: each loop's allocation turns a requested rate of change into
actuator outputs through the balance equation (:mod:`controller.core.loops`), so whatever the
set point the PI drives an integrator ``k e^(-theta s)/s`` in those coordinates. The relay therefore
switches the requested rate between ``+d_up`` and ``-d_down`` around the operating point and the
loop's own allocation turns that into N2 (or CO2, or heater) flows. The limit cycle gives the
classical ultimate gain ``Ku = 4 d / (pi a)`` and period ``Pu``; a least-squares fit of the whole
record (:func:`controller.engineering.loop_analysis.fit_integrator`) gives ``k`` and ``theta``
directly, including an identified drift (feed-forward error), and the SIMC PI follows with its
margins.

Details that matter on a real chamber (docs/control.md §D2):

* The relay runs on N2 alone for O2 where the leak allows it: "up" means *less* N2, never air,
  because the raw gains of the two split-range branches differ ~20x at 1 %. The up amplitude is at
  most 80 % of what closing N2 gives, the down amplitude is bounded so the predicted excursion
  stays inside ``max_excursion``; the relay is asymmetric. A vessel with a minimum through-flow
  (bioreactor overlay) and no leak cannot rise on N2 alone, so it uses both branches (reported).
* The hysteresis is ``hysteresis_sigmas`` times the noise of the filtered reading, measured while
  the loop holds its feed-forward just before the relay starts, and never below ``min_hysteresis``.
* Safety for supervised hardware: the experiment aborts (actuators back to feed-forward, result
  marked failed) if the value leaves ``abort_excursion`` around the operating point or no limit
  cycle forms within ``max_duration_s``.

The same :class:`AutotuneSession` runs against the twin or a live plant: it is stepped once per
control period with the trusted readings and returns the :class:`Actuation` to apply. It never
reads a clock and never sleeps; :func:`run_autotune` loops it over any :class:`TuningPlant`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from controller.core.gas import O2Loop, o2_rate_per_s
from controller.core.loops import PI, BalanceLoop, LoopMode, LoopTuning
from controller.core.process import ProcessModel
from controller.core.reactor import Actuation, ControllerTuning, ReactorController
from controller.core.recipe import Phase
from controller.core.recipe_engine import Measured
from controller.engineering.loop_analysis import IntegratorModel, Margins, fit_integrator, simc_pi

LoopName = Literal["o2", "co2", "temp"]
LOOP_NAMES: tuple[LoopName, ...] = ("o2", "co2", "temp")


class RelayConfig(BaseModel):
    """Settings of one relay experiment, in the loop's units (fraction for gases, degC).

    Attributes:
        max_excursion: Largest planned deviation from the operating point (> 0).
        abort_excursion: Deviation that aborts the experiment (> max_excursion).
        min_hysteresis: Smallest relay hysteresis (at least the sensor resolution).
        hysteresis_sigmas: Hysteresis in multiples of the filtered reading's noise (1-10).
        cycles: Limit-cycle periods recorded after the warm-up (2-20).
        warmup_switches: Relay switches discarded before recording Ku and Pu (1-10).
        hysteresis_share: Smallest hysteresis as a share of ``max_excursion`` (0-0.8): a wide
            hysteresis slows the limit cycle toward the PI's crossover frequency, where the
            identified model matters.
        max_asymmetry: Largest ratio between the two relay amplitudes (1-100).
        max_duration_s: Time-out of the relay phase, s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_excursion: float = Field(gt=0)
    abort_excursion: float = Field(gt=0)
    min_hysteresis: float = Field(gt=0)
    hysteresis_sigmas: float = Field(default=3.0, ge=1, le=10)
    cycles: int = Field(default=3, ge=2, le=20)
    warmup_switches: int = Field(default=2, ge=1, le=10)
    hysteresis_share: float = Field(default=0.4, ge=0, le=0.8)
    max_asymmetry: float = Field(default=20.0, ge=1, le=100)
    max_duration_s: float = Field(default=6 * 3600.0, gt=0)


DEFAULT_RELAY: dict[LoopName, RelayConfig] = {
    "o2": RelayConfig(max_excursion=0.001, abort_excursion=0.004, min_hysteresis=0.0001),
    "co2": RelayConfig(max_excursion=0.002, abort_excursion=0.006, min_hysteresis=0.0001),
    "temp": RelayConfig(max_excursion=0.15, abort_excursion=0.5, min_hysteresis=0.01),
}
"""Default relay settings: O2 +/- 0.1 % abs, CO2 +/- 0.2 % abs, temperature +/- 0.15 K."""


SETTLE_AFTER_PURGE_S = 300.0
"""The other loops must have tracked within their excursion this long before an experiment
starts, s."""


class Stage(StrEnum):
    """Where one relay experiment is."""

    APPROACH = "approach"
    HOLD = "hold"
    RELAY = "relay"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class RelayResult:
    """What one relay experiment found and proposes (rates in loop units/s).

    Attributes:
        loop: ``o2``, ``co2`` or ``temp``.
        ok: Whether a limit cycle was recorded and identified.
        reason: Why not, when ``ok`` is false.
        branch: Actuators the relay used.
        noise_sd: Noise of the filtered reading, loop units.
        hysteresis: Relay hysteresis used, loop units.
        d_up_per_s / d_down_per_s: Relay amplitudes, loop units/s.
        amplitude: Half the peak-to-peak limit cycle of the filtered reading, loop units.
        period_s: Ultimate period Pu, s.
        ku_per_s: Ultimate gain 4 d / (pi a), 1/s (d = mean amplitude).
        model: Identified integrator gain, dead time and drift.
        tuning: Proposed tuning (None when not ``ok``).
        margins: Margins of the proposed tuning on the identified model.
        duration_s: Length of the experiment (approach included), s.
    """

    loop: LoopName
    ok: bool
    reason: str
    branch: str
    noise_sd: float = math.nan
    hysteresis: float = math.nan
    d_up_per_s: float = math.nan
    d_down_per_s: float = math.nan
    amplitude: float = math.nan
    period_s: float = math.nan
    ku_per_s: float = math.nan
    model: IntegratorModel | None = None
    tuning: LoopTuning | None = None
    margins: Margins | None = None
    duration_s: float = 0.0


def _branch_limits(loop: BalanceLoop, op: float) -> tuple[float, float, str]:
    """Largest up and down rates (loop units/s, >= 0) on the branch the relay should use."""

    def rate(up: bool) -> float:
        forecast = loop.full_actuation(up)
        if forecast is None or forecast.tau_s <= 0:
            return 0.0
        return abs(forecast.value_inf - op) / forecast.tau_s

    down, up = rate(False), rate(True)
    branch = "full range"
    if isinstance(loop, O2Loop):
        loop.actuators_off()  # N2, air and O2 closed: what "less N2" can reach at most
        n2_only_up = o2_rate_per_s(loop.model, op, loop.flows)
        if n2_only_up > 0.0 and loop.model.min_through_flow_lpm <= 0.0:
            up, branch = n2_only_up, "N2 only (up = less N2)"
        else:
            branch = "split range (up = air/O2, down = N2)"
    loop.allocate(op, 0.0)
    return up, down, branch


@dataclass(slots=True)
class RelayExperiment:
    """One loop's relay experiment, stepped once per control period.

    Args:
        name: Loop name.
        loop: The loop under test (its allocation and full actuation are used).
        target: Operating point, loop units.
        config: Relay settings.
    """

    name: LoopName
    loop: BalanceLoop
    target: float
    config: RelayConfig
    stage: Stage = Stage.APPROACH
    t_s: float = 0.0
    filtered: float | None = None
    hold_y: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    switch_steps: list[int] = field(default_factory=list)
    up: bool = True
    hysteresis: float = math.nan
    noise_sd: float = math.nan
    d_up: float = 0.0
    d_down: float = 0.0
    branch: str = ""
    relay_start_s: float = 0.0
    result: RelayResult | None = None
    limit_sums: tuple[float, float] = (0.0, 0.0)

    @property
    def hold_s(self) -> float:
        """Length of the feed-forward hold before the relay (noise estimate), s."""
        return max(6.0 * self.loop.dead_time_s, 180.0)

    def step(self, dt_s: float, measured: float | None, others_settled: bool = True) -> None:
        """Advance one cycle and set the loop's actuators.

        Args:
            dt_s: Control period, s.
            measured: Reading in loop units, ``None`` when untrusted.
            others_settled: The other loops hold their set points (no purge running); the
                experiment leaves its approach only then, so it starts at a steady operating point.
        """
        self.t_s += dt_s
        if measured is None:  # untrusted reading: the loop's own safe hold, experiment waits
            self.loop.update(dt_s, None)
            return
        alpha = (
            1.0 - math.exp(-dt_s / self.loop.tuning.filter_s) if self.loop.tuning.filter_s else 1
        )
        self.filtered = (
            measured
            if self.filtered is None
            else self.filtered + (measured - self.filtered) * alpha
        )
        y = self.filtered
        if self.stage is Stage.APPROACH:
            self._approach(dt_s, measured, y, others_settled)
        elif self.stage is Stage.HOLD:
            self._hold(dt_s, y)
        elif self.stage is Stage.RELAY:
            self._relay(dt_s, y)
        else:
            self.loop.allocate(self.target, 0.0)

    def _approach(self, dt_s: float, measured: float, y: float, others_settled: bool) -> None:
        self.loop.update(dt_s, measured)
        if self.loop.mode in (LoopMode.PURGE_DOWN, LoopMode.PURGE_UP) or not others_settled:
            return
        if (
            abs(y - self.target) <= self.config.max_excursion
            or self.t_s > self.config.max_duration_s
        ):
            self.stage = Stage.HOLD
            self.loop.allocate(self.target, 0.0)

    def _hold(self, dt_s: float, y: float) -> None:
        up_now, down_now, self.branch = _branch_limits(self.loop, self.target)
        self.limit_sums = (self.limit_sums[0] + up_now, self.limit_sums[1] + down_now)
        self.hold_y.append(y)
        if len(self.hold_y) * dt_s < self.hold_s:
            return
        tail = self.hold_y[len(self.hold_y) // 2 :]
        self.noise_sd = _detrended_sd(tail)
        cfg = self.config
        self.hysteresis = max(
            cfg.hysteresis_sigmas * self.noise_sd,
            cfg.min_hysteresis,
            cfg.hysteresis_share * cfg.max_excursion,
        )
        # mean over the hold: the other loops' flows (N2 dilutes CO2) chatter with sensor noise
        up_max, down_max = (total / len(self.hold_y) for total in self.limit_sums)
        theta = max(self.loop.dead_time_s, dt_s)
        # peak within max_excursion, and each ramp across the hysteresis lasts >= 3 dead times
        reach = max(cfg.max_excursion - self.hysteresis, 0.0)
        cap = min(reach / theta, 2.0 * self.hysteresis / (3.0 * theta))
        self.d_up, self.d_down = min(0.8 * up_max, cap), min(0.8 * down_max, cap)
        if self.d_up <= 0.0 or self.d_down <= 0.0:
            self._finish(False, f"the {self.branch} branch cannot move the value both ways")
            return
        self.d_up = min(self.d_up, cfg.max_asymmetry * self.d_down)
        self.d_down = min(self.d_down, cfg.max_asymmetry * self.d_up)
        self.up = y < self.target
        self.stage = Stage.RELAY
        self.relay_start_s = self.t_s
        self.ys.extend(self.hold_y[-len(tail) :])  # zero-rate history in front of the relay
        self.rates.extend([0.0] * len(tail))

    def _relay(self, dt_s: float, y: float) -> None:
        cfg = self.config
        if abs(y - self.target) > cfg.abort_excursion:
            self._finish(False, f"aborted: {self.name} left +/- {cfg.abort_excursion:g}")
            return
        if self.up and y > self.target + self.hysteresis:
            self.up = False
            self.switch_steps.append(len(self.ys))
        elif not self.up and y < self.target - self.hysteresis:
            self.up = True
            self.switch_steps.append(len(self.ys))
        applied = self.loop.allocate(self.target, self.d_up if self.up else -self.d_down)
        self.ys.append(y)
        self.rates.append(applied)
        if len(self.switch_steps) >= cfg.warmup_switches + 2 * cfg.cycles + 1:
            self._identify(dt_s)
        elif self.t_s - self.relay_start_s > cfg.max_duration_s:
            self._finish(False, f"no limit cycle within {cfg.max_duration_s:g} s")

    def _identify(self, dt_s: float) -> None:
        cfg = self.config
        first = self.switch_steps[cfg.warmup_switches]
        ups = [s for s in self.switch_steps[cfg.warmup_switches :] if self.rates[s] > 0]
        period = (ups[-1] - ups[0]) * dt_s / (len(ups) - 1) if len(ups) > 1 else math.nan
        window = self.ys[first : self.switch_steps[-1]]
        amplitude = 0.5 * (max(window) - min(window))
        d = 0.5 * (self.d_up + self.d_down)
        ku = 4.0 * d / (math.pi * amplitude) if amplitude > 0 else math.nan
        longest = min(0.5 * period, 4.0 * self.loop.dead_time_s + 30.0)
        fitted = fit_integrator(self.rates, self.ys, dt_s, max_dead_time_s=longest)
        if fitted is None or not math.isfinite(period):
            self._finish(False, "limit cycle recorded but the integrator fit failed")
            return
        kp, ti, factor, found = simc_pi(fitted, self.loop.tuning.tau_c_factor)
        tuning = self.loop.tuning.model_copy(
            update={"kp_per_s": kp, "ti_s": ti, "tau_c_factor": factor}
        )
        self._finish(
            True,
            "",
            amplitude=amplitude,
            period_s=period,
            ku_per_s=ku,
            model=fitted,
            tuning=tuning,
            margins=found,
        )

    def _finish(self, ok: bool, reason: str, **found: Any) -> None:
        self.stage = Stage.DONE
        self.loop.allocate(self.target, 0.0)
        self.result = RelayResult(
            loop=self.name,
            ok=ok,
            reason=reason,
            branch=self.branch,
            noise_sd=self.noise_sd,
            hysteresis=self.hysteresis,
            d_up_per_s=self.d_up,
            d_down_per_s=self.d_down,
            duration_s=self.t_s,
            **found,
        )

    def hand_back(self, tuning: LoopTuning) -> None:
        """Return the loop to closed-loop tracking at the target with ``tuning``'s gains."""
        loop = self.loop
        if tuning.kp_per_s is not None and tuning.ti_s is not None:
            pi = PI(tuning.kp_per_s, tuning.ti_s)
            pi.integral = loop.pi.integral  # same rate coordinates: the integral carries over
            loop.pi = pi
        loop.tuning = tuning
        loop.release()  # the relay moved the actuators: nothing held from before
        loop.filtered = self.filtered
        loop.ref.value = loop.ref.sensed = self.target
        loop.mode = LoopMode.TRACK


def _detrended_sd(values: Sequence[float]) -> float:
    """Standard deviation of ``values`` about their least-squares straight line."""
    n = len(values)
    if n < 3:
        return 0.0
    mid = 0.5 * (n - 1)
    mean = math.fsum(values) / n
    sxx = sum((i - mid) ** 2 for i in range(n))
    slope = sum((i - mid) * (v - mean) for i, v in enumerate(values)) / sxx
    resid = [v - mean - slope * (i - mid) for i, v in enumerate(values)]
    return math.sqrt(math.fsum(r * r for r in resid) / (n - 2))


def _loop_value(name: LoopName, m: Measured) -> float | None:
    if name == "temp":
        return m.temp_c
    pct = m.o2_pct if name == "o2" else m.co2_pct
    return None if pct is None else pct / 100.0


class AutotuneSession:
    """Relay-tune several loops of one reactor in turn at the operating point of ``phase``.

    The loops run in the controller's order (O2, then CO2, which sees this cycle's N2, then
    temperature). The loop under test is driven by its relay experiment; the others keep closed
    loop control. When a loop is done its proposed gains are installed before the next starts.

    Args:
        model: The controller's process model of the vessel.
        phase: Operating point: ``o2_pct``, ``co2_pct``, ``temp_c`` (gas O2 basis).
        tuning: Starting tuning (e.g. the vessel's current gains).
        loops: Loops to tune, in order; each needs a set point in ``phase``.
        relay: Relay settings per loop (defaults: :data:`DEFAULT_RELAY`).
    """

    def __init__(
        self,
        model: ProcessModel,
        phase: Phase,
        tuning: ControllerTuning | None = None,
        loops: Sequence[LoopName] = LOOP_NAMES,
        relay: dict[LoopName, RelayConfig] | None = None,
    ) -> None:
        targets: dict[LoopName, float | None] = {
            "o2": phase.o2_frac,
            "co2": None if phase.co2_pct is None else phase.co2_pct / 100.0,
            "temp": phase.temp_c,
        }
        missing = [name for name in loops if targets[name] is None]
        if missing or phase.o2_basis != "gas":
            msg = f"autotune needs a gas-basis set point for {', '.join(missing) or 'o2'}"
            raise ValueError(msg)
        self.model = model
        self.phase = phase
        self.tuning = tuning or ControllerTuning()
        self.initial = self.tuning
        self.pending: list[LoopName] = list(loops)
        self.targets = targets
        self.relay = {**DEFAULT_RELAY, **(relay or {})}
        self.results: dict[LoopName, RelayResult] = {}
        self.t_s = 0.0
        self.quiet_s = 0.0
        self.controller = ReactorController(model, self.tuning)
        self.controller.apply_phase(phase)
        self.experiment: RelayExperiment | None = None
        self._next()

    def _next(self) -> None:
        self.experiment = None
        if not self.pending:
            return
        name = self.pending.pop(0)
        target = self.targets[name]
        assert target is not None  # noqa: S101 - checked in __init__
        loop: BalanceLoop = getattr(self.controller, name)
        self.experiment = RelayExperiment(name, loop, target, self.relay[name])

    def _holding(self, name: LoopName) -> bool:
        """Loop ``name`` is off, or tracks within 30 % of its relay excursion of its set point."""
        loop: BalanceLoop = getattr(self.controller, name)
        if loop.ref.target is None:
            return True
        if loop.mode is not LoopMode.TRACK or loop.filtered is None:
            return False
        return abs(loop.filtered - loop.ref.target) <= 0.3 * self.relay[name].max_excursion

    @property
    def done(self) -> bool:
        """True once every requested loop has a result."""
        return self.experiment is None

    def adapted(self) -> dict[str, float]:
        """What the headspace observer learned during the session.

        Volume L, leak L/min, flow gain, O2 lag s; empty without an observer.
        """
        return self.controller.adapted()

    @property
    def proposed(self) -> ControllerTuning:
        """The starting tuning with every successful proposal installed."""
        return self.tuning

    def step(self, dt_s: float, measured: Measured) -> Actuation:
        """One control period: readings in, actuator commands out."""
        self.t_s += dt_s
        ctl, exp = self.controller, self.experiment
        others = [name for name in LOOP_NAMES if exp is None or name != exp.name]
        steady = all(self._holding(name) for name in others)
        self.quiet_s = self.quiet_s + dt_s if steady else 0.0
        # The loops run on the model's parameters and their filtered readings, so the relay
        # identifies the loop as the model sees it (a volume error shows as k != 1); the headspace
        # observer watches every period (the relay's flows included) and reports what it learned
        # (:meth:`adapted`), without feeding it to the loops.
        ctl.observe(measured, adapt=False)
        for name in LOOP_NAMES:
            value = _loop_value(name, measured)
            if exp is not None and exp.name == name:
                exp.step(dt_s, value, others_settled=self.quiet_s >= SETTLE_AFTER_PURGE_S)
            else:
                getattr(ctl, name).update(dt_s, value)
        f = ctl.flows
        act = Actuation.from_flows(f, ctl.temp.heater_w)
        if exp is not None and exp.result is not None:
            self.results[exp.name] = exp.result
            if exp.result.tuning is not None:
                self.tuning = self.tuning.model_copy(update={exp.name: exp.result.tuning})
            exp.hand_back(getattr(self.tuning, exp.name))
            self._next()
        return act


class TuningPlant(Protocol):
    """What autotuning needs from a plant: one reading and one command per control period.

    A twin adapter advances the simulation in :meth:`apply`; a live adapter writes the set points
    and returns, and the service calls :meth:`read` again at the next cycle.
    """

    @property
    def control_period_s(self) -> float:
        """Control period, s."""
        ...

    def read(self) -> Measured:
        """Trusted readings for this period (``None`` fields when untrusted)."""
        ...

    def apply(self, actuation: Actuation) -> None:
        """Apply the commands for the coming period."""
        ...


def run_autotune(plant: TuningPlant, session: AutotuneSession, max_steps: int) -> AutotuneSession:
    """Step ``session`` against ``plant`` until it is done or ``max_steps`` periods have passed."""
    dt = plant.control_period_s
    for _ in range(max_steps):
        if session.done:
            break
        plant.apply(session.step(dt, plant.read()))
    return session
