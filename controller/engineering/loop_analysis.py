"""Integrator-plus-dead-time view of an exactly linearised loop: fit, SIMC PI and margins.

Every :class:`controller.core.loops.BalanceLoop` asks for a *rate* (loop units per second) and its
allocation solves the balance for the actuators, so the PI sees

    G(s) = k e^(-theta s) / (s (tau s + 1))

with ``k`` = achieved rate / requested rate (1 when the controller's process model is exact; a
volume, actuator or heat-capacity error shows up as k != 1), ``theta`` = transport delay + half a
control period and ``tau`` the lumped first-order lags (sensor, measurement filter, actuator).
This module fits ``k``, ``theta`` and ``tau`` from any record of requested rates and filtered
readings (a relay experiment, :mod:`controller.engineering.autotune`), designs the SIMC PI for an
integrating process with ``theta_eff = theta + tau`` (docs/control.md §D2:
Kp = 1/(k (tau_c + theta_eff)), Ti = 4 (tau_c + theta_eff)) and evaluates gain margin, phase
margin and the sensitivity peak Ms on the fitted model, lag included.

Pure functions; no clock, no I/O.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul

MS_MAX = 1.6
"""Largest sensitivity peak accepted for a proposed tuning (docs/control.md §D2, T11)."""


@dataclass(frozen=True, slots=True)
class IntegratorModel:
    """Identified loop seen by the PI: k e^(-theta s) / ((s + a)(tau s + 1)) plus a drift.

    Attributes:
        gain: Achieved rate per requested rate (dimensionless, 1 = the process model is exact).
        dead_time_s: Pure delay theta, s.
        lag_s: Lumped first-order lag tau, s.
        self_regulation_per_s: Pull back toward the operating point a, 1/s: the allocation
            linearises at the reference, so a vessel with a large through-flow (bioreactor
            overlay, Q/V = 0.5 /min) is first order with time constant 1/a rather than an
            integrator; ~0 for chambers.
        drift_per_s: Rate the value drifts at zero request, loop units/s (feed-forward error).
        residual_rms: RMS misfit of the fit, loop units.
    """

    gain: float
    dead_time_s: float
    lag_s: float
    self_regulation_per_s: float
    drift_per_s: float
    residual_rms: float

    @property
    def effective_dead_time_s(self) -> float:
        """Theta + tau: the dead time SIMC designs for (a lag delays a ramp by tau), s."""
        return self.dead_time_s + self.lag_s


@dataclass(frozen=True, slots=True)
class Margins:
    """Stability margins of a PI on the identified loop.

    Attributes:
        gain_margin: Factor by which the loop gain may grow before instability (> 1).
        phase_margin_deg: Phase margin at the gain crossover, degrees.
        ms: Peak of the sensitivity |1/(1 + L)| (robustness; <= 1.6 wanted).
        crossover_rad_s: Gain-crossover frequency, rad/s.
    """

    gain_margin: float
    phase_margin_deg: float
    ms: float
    crossover_rad_s: float


def margins(
    gain: float,
    dead_time_s: float,
    kp_per_s: float,
    ti_s: float,
    lag_s: float = 0.0,
    self_regulation_per_s: float = 0.0,
) -> Margins:
    """Gain and phase margins and Ms of PI on k e^(-theta s) / ((s + a)(tau s + 1)).

    Args:
        gain: Process gain k (dimensionless rate ratio, > 0).
        dead_time_s: Delay theta, s (>= 0).
        kp_per_s: Proportional gain, 1/s (> 0).
        ti_s: Integral time, s (> 0).
        lag_s: First-order lag tau, s (>= 0).
        self_regulation_per_s: a, 1/s (>= 0; 0 = pure integrator).
    """
    scale = max(dead_time_s + lag_s, 1e-3)
    lo, hi, n = 1e-4 / scale, 20.0 / scale, 4000
    ms, crossover, phase_cross = 1.0, math.nan, math.nan
    mag_prev, gap_prev, gain_margin = math.inf, -1.0, math.inf
    for i in range(n + 1):
        w = lo * (hi / lo) ** (i / n)
        s = 1j * w
        loop = kp_per_s * (1 + 1 / (ti_s * s)) * gain * cmath.exp(-dead_time_s * s)
        loop /= (s + self_regulation_per_s) * (lag_s * s + 1)
        ms = max(ms, 1.0 / max(abs(1.0 + loop), 1e-12))
        mag = abs(loop)
        if mag_prev > 1.0 >= mag and math.isnan(crossover):
            crossover = w
        mag_prev = mag
        # -(phase + pi): < 0 at low frequency, crosses 0 where the phase reaches -180 degrees
        gap = _phase_lag(w, dead_time_s, ti_s, lag_s, self_regulation_per_s) - math.pi
        if gap_prev < 0.0 <= gap and math.isnan(phase_cross):
            phase_cross, gain_margin = w, 1.0 / mag
        gap_prev = gap
    if math.isnan(crossover):
        return Margins(gain_margin, math.nan, ms, math.nan)
    lag = _phase_lag(crossover, dead_time_s, ti_s, lag_s, self_regulation_per_s)
    return Margins(gain_margin, math.degrees(math.pi - lag), ms, crossover)


def _phase_lag(w: float, theta: float, ti: float, tau: float, a: float) -> float:
    """Phase lag of PI * e^(-theta s) / ((s + a)(tau s + 1)) at ``w`` rad/s, radians (> 0)."""
    return math.atan(1.0 / (w * ti)) + w * theta + math.atan2(w, a) + math.atan(w * tau)


def simc_pi(
    model: IntegratorModel, tau_c_factor: float, ms_max: float = MS_MAX
) -> tuple[float, float, float, Margins]:
    """SIMC PI for the identified loop, detuned until Ms <= ``ms_max``.

    Kp = 1/(k (tau_c + theta_eff)) whether or not the loop self-regulates (k/(s + a) is a first
    order of gain k/a and time constant 1/a), Ti = min(1/a, 4 (tau_c + theta_eff)).

    Args:
        model: Identified gain, delay and lag.
        tau_c_factor: Closed-loop time constant as a multiple of theta + tau (0.5-20).
        ms_max: Largest accepted sensitivity peak.

    Returns:
        ``(kp_per_s, ti_s, tau_c_factor used, margins on the fitted model)``.
    """
    theta = model.effective_dead_time_s
    slowest = 1.0 / model.self_regulation_per_s if model.self_regulation_per_s > 0 else math.inf
    factor = tau_c_factor
    while True:
        kp = 1.0 / (model.gain * (factor + 1.0) * theta)
        ti = min(
            4.0 * (factor + 1.0) * theta, slowest
        )  # SIMC: tau_I = min(tau_1, 4 (tau_c + theta))
        found = margins(
            model.gain, model.dead_time_s, kp, ti, model.lag_s, model.self_regulation_per_s
        )
        if found.ms <= ms_max or factor >= 20.0:
            return kp, ti, factor, found
        factor = min(20.0, factor * 1.1)


def _solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Solve a small linear system by Gaussian elimination with pivoting (None if singular)."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


class _Record:
    """A record prepared for least squares of y = c0 + c1 t - a integral(y) + k response(t - lag).

    The three fixed regressors (1, t, integral of the centred reading) and their sums are computed
    once; :meth:`fit` adds the lagged response of one candidate delay and lag.
    """

    def __init__(self, measured: Sequence[float], dt_s: float, keep: range) -> None:
        n = len(measured)
        mean = math.fsum(measured[i] for i in keep) / len(keep)
        integral_y = [0.0] * n
        for i in range(1, n):
            integral_y[i] = integral_y[i - 1] + (measured[i - 1] - mean) * dt_s
        self.keep = keep
        self.y = [measured[i] - mean for i in keep]  # centred: keeps the equations well scaled
        self.fixed = [
            [1.0] * len(keep),
            [(i - 0.5 * (n - 1)) * dt_s for i in keep],
            [integral_y[i] for i in keep],
        ]
        self.gram = [[sum(map(mul, p, q)) for q in self.fixed] for p in self.fixed]
        self.rhs = [sum(map(mul, p, self.y)) for p in self.fixed]
        self.yy = sum(map(mul, self.y, self.y))

    def fit(self, response: Sequence[float], lag: int) -> tuple[float, list[float]] | None:
        """LS fit for one delay (in samples); returns (SSE, [c0, c1, -a, k])."""
        z = [response[max(i - lag, 0)] for i in self.keep]
        cross = [sum(map(mul, p, z)) for p in self.fixed]
        gram = [[*row, c] for row, c in zip(self.gram, cross, strict=True)]
        gram.append([*cross, sum(map(mul, z, z))])
        rhs = [*self.rhs, sum(map(mul, z, self.y))]
        coef = _solve(gram, rhs)
        if coef is None:
            return None
        sse = self.yy - sum(map(mul, coef, rhs))  # residual at the LS solution
        return max(sse, 0.0), coef


def _lagged(values: Sequence[float], lag_s: float, dt_s: float) -> list[float]:
    """``values`` through a first-order lag of ``lag_s`` (exact for piecewise-linear input)."""
    if lag_s <= 0.0:
        return list(values)
    a, c = math.exp(-dt_s / lag_s), lag_s / dt_s
    out = [values[0]]
    for i in range(1, len(values)):
        rise = (values[i] - values[i - 1]) * c  # ramp over the step times tau/dt
        out.append(values[i] - rise + (out[-1] - values[i - 1] + rise) * a)
    return out


def fit_integrator(
    requested_rate: Sequence[float],
    measured: Sequence[float],
    dt_s: float,
    max_dead_time_s: float,
    max_samples: int = 1500,
) -> IntegratorModel | None:
    """Fit dy/dt = k u(t - theta) (through a lag tau) - a (y - y0) + b to a sampled record.

    Args:
        requested_rate: u[i], the rate asked over step i (loop units/s), i.e. after reading y[i].
        measured: y[i], the (filtered) reading at the start of step i, loop units.
        dt_s: Sample period, s.
        max_dead_time_s: Largest theta + tau searched, s.
        max_samples: The sums use at most this many evenly spaced samples (speed).

    Returns:
        The least-squares fit over a grid of lags and whole-sample delays (``a`` and ``b`` are
        linear parameters of every candidate), or ``None`` if the record is too short or the
        fitted gain is not positive.
    """
    n = min(len(requested_rate), len(measured))
    if n < 20:
        return None
    integral = [0.0] * n
    for i in range(1, n):
        integral[i] = integral[i - 1] + requested_rate[i - 1] * dt_s
    record = _Record(measured[:n], dt_s, range(0, n, max(1, math.ceil(n / max_samples))))
    step = max(1, round(max_dead_time_s / dt_s) // 40)
    best: tuple[float, int, float, list[float]] | None = None
    responses: dict[float, list[float]] = {}
    low, high = max(dt_s, 1.0), 0.8 * max_dead_time_s
    taus = [0.0, *(low * (high / low) ** (k / 9) for k in range(10))] if high > low else [0.0]
    for tau in taus:
        responses[tau] = _lagged(integral, tau, dt_s)
        for lag in range(0, max(1, round((max_dead_time_s - tau) / dt_s)) + 1, step):
            found = record.fit(responses[tau], lag)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], lag, tau, found[1])
    if best is not None and step > 1:
        _sse, centre, tau, _coef = best
        for lag in range(max(0, centre - step + 1), centre + step):
            found = record.fit(responses[tau], lag)
            if found is not None and found[0] < best[0]:
                best = (found[0], lag, tau, found[1])
    if best is None or best[3][3] <= 0.0:
        return None
    sse, lag, tau, (_c0, drift, minus_a, k) = best
    rms = math.sqrt(sse / len(record.keep))
    return IntegratorModel(k, lag * dt_s, tau, max(-minus_a, 0.0), drift, rms)
