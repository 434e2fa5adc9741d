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

from controller.core.process import X_AIR_O2, ProcessModel, co2_ratio_lpm, steady_n2_lpm
from controller.core.reactor import ReactorController

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


@dataclass(frozen=True, slots=True)
class SampledLoop:
    """One side of the observer-based O2 loop, linearised at its set point (per control period).

    The chamber obeys x_{k+1} = phi x_k + dt k u_k (u: the rate the allocation delivers, 1/s,
    through the MFC lag), the sensor s_k = s_{k-1} + alpha (x_{k-delay} - s_{k-1}).

    Attributes:
        dt_s: Control period, s.
        phi: Self-regulation per period, exp(-(Q_total/V + leak/V) dt) (1 = integrator).
        gain: Delivered / requested rate (k; 1 when the volume is right).
        delay: Transport delay, whole periods.
        alpha: Sensor lag per period, 1 - exp(-dt/t63).
        mfc_tau_s: MFC first-order lag, s.
        leak_gain: d(dx/dt)/d(leak rate) at the set point, x_a - x (the observer's leak state).
    """

    dt_s: float
    phi: float
    gain: float
    delay: int
    alpha: float
    mfc_tau_s: float
    leak_gain: float


def _mfc(w: complex, dt: float, tau: float) -> complex:
    """Mean flow over a period per unit set point through a first-order MFC lag."""
    if tau <= 0.0:
        return 1.0 + 0j
    e1 = math.exp(-dt / tau)
    c1 = tau / dt * (1.0 - e1)
    zi = cmath.exp(-1j * w)
    return (1.0 - c1) + c1 * (1.0 - e1) * zi / (1.0 - e1 * zi)


def _solve3(m: list[list[complex]], b: list[complex]) -> list[complex]:
    """Solve a 3x3 complex system by Cramer's rule."""

    def det(a: list[list[complex]]) -> complex:
        return (
            a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
        )

    d = det(m)
    out = []
    for c in range(3):
        mc = [[b[r] if j == c else m[r][j] for j in range(3)] for r in range(3)]
        out.append(det(mc) / d)
    return out


def steady_kalman_gain(
    model: SampledLoop, chamber_var: float, leak_var: float, noise_var: float
) -> tuple[float, float, float]:
    """Steady-state Kalman gain of the observer's [chamber, sensor, leak] filter.

    The same model and noise as :class:`controller.core.observer.HeadspaceObserver` in
    tracking (volume, lag and door frozen): process noise ``chamber_var`` on the chamber (passed
    to the sensor through the lag), ``leak_var`` on the leak rate, measurement ``noise_var``.
    """
    phi, a, dt, gam = model.phi, model.alpha, model.dt_s, model.leak_gain
    f = [[phi, 0.0, dt * gam], [a * phi, 1.0 - a, a * dt * gam], [0.0, 0.0, 1.0]]
    q = [[chamber_var, a * chamber_var, 0.0], [a * chamber_var, a * a * chamber_var, 0.0]]
    q.append([0.0, 0.0, leak_var])
    p = [[chamber_var * 100.0 if i == j else 0.0 for j in range(3)] for i in range(3)]
    k = (0.0, 0.0, 0.0)
    for _ in range(20000):
        fp = [[sum(f[i][m] * p[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
        pp = [
            [sum(fp[i][m] * f[j][m] for m in range(3)) + q[i][j] for j in range(3)]
            for i in range(3)
        ]
        s = pp[1][1] + noise_var
        k_new = (pp[0][1] / s, pp[1][1] / s, pp[2][1] / s)
        p = [[pp[i][j] - k_new[i] * pp[1][j] for j in range(3)] for i in range(3)]
        if max(abs(x - y) for x, y in zip(k, k_new, strict=True)) < 1e-12:
            return k_new
        k = k_new
    return k


def observer_loop_sensitivity(
    plant: SampledLoop,
    model: SampledLoop,
    kalman: tuple[float, float, float],
    kp_per_s: float,
    ti_s: float,
    omega: float,
) -> complex:
    """S = 1/(1 + L) at ``omega`` (rad per control period) for the loop broken at the rate.

    Controller: the [chamber, sensor, leak] filter of ``model`` with gain ``kalman`` on the
    delayed axis (predict with the flows applied one delay earlier, correct with the reading),
    its estimate carried through ``model.delay`` periods of applied flows (the Smith-type
    prediction), the PI on that estimate and the feed-forward of the estimated leak. An input
    disturbance is not seen by the filter, so the controller is u = C y with
    C = G_y / (1 - G_u) (G_u: the path from its own output through the model).
    """
    dt, phi, a, d = model.dt_s, model.phi, model.alpha, model.delay
    gam = model.leak_gain
    kz, ks, kl = kalman
    ikc = [[1.0, -kz, 0.0], [0.0, 1.0 - ks, 0.0], [0.0, -kl, 1.0]]  # I - K C, C = [0, 1, 0]
    am = [[phi, 0.0, dt * gam], [a * phi, 1.0 - a, a * dt * gam], [0.0, 0.0, 1.0]]
    bm = [dt, a * dt, 0.0]
    ia = [[sum(ikc[i][m] * am[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
    ib = [sum(ikc[i][m] * bm[m] for m in range(3)) for i in range(3)]
    e_row = [phi**d, 0.0, dt * gam * sum(phi**j for j in range(d))]
    zi = cmath.exp(-1j * omega)
    mfc_m = _mfc(omega, dt, model.mfc_tau_s)
    mfc_p = _mfc(omega, dt, plant.mfc_tau_s)
    m = [[(1.0 if r == c else 0.0) - zi * ia[r][c] for c in range(3)] for r in range(3)]
    xi_y = _solve3(m, [kz + 0j, ks + 0j, kl + 0j])
    xi_u = _solve3(m, [ib[r] * zi ** (1 + d) * mfc_m for r in range(3)])
    fwd = sum(phi ** (d - 1 - j) * dt * zi ** (d - j) for j in range(d)) * mfc_m
    pi = kp_per_s * (1.0 + dt / ti_s * zi / (1.0 - zi))
    out = [pi * e_row[0], pi * e_row[1], pi * e_row[2] + gam]
    g_y = -sum(out[r] * xi_y[r] for r in range(3))
    g_u = -sum(out[r] * xi_u[r] for r in range(3)) - pi * fwd
    ctl = g_y / (1.0 - g_u)
    x_per_u = plant.gain * dt * zi / (1.0 - plant.phi * zi) * mfc_p
    y_per_x = plant.alpha * zi**plant.delay / (1.0 - (1.0 - plant.alpha) * zi)
    return 1.0 / (1.0 - ctl * x_per_u * y_per_x)


def observer_loop_margins(
    plant: SampledLoop,
    model: SampledLoop,
    kalman: tuple[float, float, float],
    kp_per_s: float,
    ti_s: float,
    points: int = 3000,
) -> Margins:
    """Ms and crossover of the observer-based loop (:func:`observer_loop_sensitivity`).

    Gain and phase margins are not reported for this structure (nan); Ms is the robustness
    measure of docs/control.md §D2.
    """
    ms, crossover, mag_prev = 1.0, math.nan, math.inf
    for i in range(1, points + 1):
        w = math.pi * (1e-5 ** (1.0 - i / points))  # log grid up to Nyquist
        sens = observer_loop_sensitivity(plant, model, kalman, kp_per_s, ti_s, w)
        ms = max(ms, abs(sens))
        mag = abs(1.0 / sens - 1.0)
        if mag_prev > 1.0 >= mag and math.isnan(crossover):
            crossover = w / plant.dt_s
        mag_prev = mag
    return Margins(math.nan, math.nan, ms, crossover)


def _steady_phi(
    model: ProcessModel, volume_l: float, leak_lpm: float, x_sp: float, co2: float
) -> float:
    """Self-regulation per period at the set point: exp(-(inflow + leak)/V dt)."""
    q_c = co2_ratio_lpm(co2, max(steady_n2_lpm(model, x_sp, 0.0), 0.0), leak_lpm)
    n2 = max(leak_lpm * (X_AIR_O2 / x_sp - 1.0) - q_c, 0.0)
    inflow = max(n2 + q_c, model.min_through_flow_lpm)
    return math.exp(-(inflow + leak_lpm) / (60.0 * volume_l) * model.control_period_s)


def o2_loop_sides(
    controller: ReactorController, plant: ProcessModel, x_sp: float, co2: float = 0.05
) -> tuple[SampledLoop, SampledLoop, tuple[float, float, float]]:
    """(plant side, controller side, steady Kalman gain) of ``controller``'s observer loop."""
    obs = controller.observer
    assert obs is not None  # noqa: S101 - callers check
    dt = plant.control_period_s
    t = obs.tuning
    model_side = SampledLoop(
        dt_s=dt,
        phi=_steady_phi(controller.model, obs.volume_l, obs.leak_lpm, x_sp, co2),
        gain=1.0,
        delay=obs.delay,
        alpha=obs.w[5],
        mfc_tau_s=controller.model.mfc_tau_s,
        leak_gain=X_AIR_O2 - x_sp,
    )
    d_p = max(0, round(plant.transport_delay_s / dt))
    t63_p = plant.o2_sensor_t63_s + (plant.transport_delay_s - d_p * dt)
    plant_side = SampledLoop(
        dt_s=dt,
        phi=_steady_phi(plant, plant.volume_l, plant.leak_lpm, x_sp, co2),
        gain=obs.volume_l / plant.volume_l,
        delay=d_p,
        alpha=1.0 - math.exp(-dt / t63_p) if t63_p > 0 else 1.0,
        mfc_tau_s=plant.mfc_tau_s,
        leak_gain=X_AIR_O2 - x_sp,
    )
    kalman = steady_kalman_gain(
        model_side, t.chamber_sd**2, (t.leak_sd * obs.leak_scale) ** 2, obs.r_o2
    )
    return plant_side, model_side, kalman


def o2_loop_margins(
    controller: ReactorController, plant: ProcessModel, x_sp: float, co2: float = 0.05
) -> Margins:
    """Ms of ``controller``'s O2 loop on the true ``plant`` at set point ``x_sp``.

    With a headspace observer: :func:`observer_loop_margins` with the observer's current
    (adapted) volume, leak, delay and lag on the controller side. Without: the PI on the
    filtered reading (:func:`margins`), loop gain V_model / V_true.
    """
    loop, obs = controller.o2, controller.observer
    dt = plant.control_period_s
    if obs is None or not obs.started:
        delay = plant.transport_delay_s + 0.5 * dt
        lag = plant.o2_sensor_t63_s + loop.tuning.filter_s
        return margins(loop.volume_l / plant.volume_l, delay, loop.pi.kp_per_s, loop.pi.ti_s, lag)
    plant_side, model_side, kalman = o2_loop_sides(controller, plant, x_sp, co2)
    return observer_loop_margins(plant_side, model_side, kalman, loop.pi.kp_per_s, loop.pi.ti_s)
