"""Chamber identification: fit volume, leak, transport delay and sensor lags to a test record.

Pure (no I/O, no clock): ``controller/service/identify.py`` runs the test on the chamber and hands
the record here; ``hypoxia identify`` writes the vessel file and the proposed gains from the fit.
The method, its equations and its limits are in docs/commissioning.md.

The model is the headspace balance of docs/physics.md §B1 for one gas fraction x (0..1)::

    V dx/dt = sum_i Q_i (x_i - x) + Q_L (x_a - x)

with the commanded flows Q_i (L/min, each feed of fraction x_i) held between set-point changes and
shifted by the MFC lag, a transport delay theta in front of the sensor and a first-order sensor lag
t63. With flows constant over a segment the balance is solved exactly; the delayed chamber passes
through the lag on a fine grid (``GRID_S``). Levenberg-Marquardt (numpy only) fits
(ln V, Q_L, theta, ln t63, x0) to the O2 readings; the covariance sigma^2 (J^T J)^-1 of the final
Jacobian gives each parameter's standard uncertainty. A CO2 step, if recorded, fits the CO2
sensor's lag (and start value) with V, Q_L and theta fixed from the O2 fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from controller.core.process import X_AIR_CO2, X_AIR_O2

Array = npt.NDArray[np.float64]

GRID_S = 0.5
"""Step of the fine grid the model is evaluated on, s (smaller when the sensor is faster)."""
MAX_GRID_POINTS = 60_000
O2_FEED = (0.0, X_AIR_O2, 1.0, 0.0)
"""O2 fraction of the N2, air, O2 and CO2 feeds."""
CO2_FEED = (0.0, X_AIR_CO2, 0.0, 1.0)
"""CO2 fraction of the N2, air, O2 and CO2 feeds."""


@dataclass(frozen=True, slots=True)
class FlowStep:
    """Set points commanded at ``t_s`` and held until the next step (L/min, >= 0)."""

    t_s: float
    n2_lpm: float = 0.0
    air_lpm: float = 0.0
    o2_lpm: float = 0.0
    co2_lpm: float = 0.0

    def flows(self) -> tuple[float, float, float, float]:
        """(N2, air, O2, CO2) in L/min."""
        return (self.n2_lpm, self.air_lpm, self.o2_lpm, self.co2_lpm)


@dataclass(frozen=True, slots=True)
class IdentificationRecord:
    """What the identification test recorded (times in seconds on one monotonic clock).

    Attributes:
        flows: Set-point changes in time order; the first is at or before the first sample.
        o2_t_s, o2_pct: O2 readings (vol-%, 0-100) and when they were taken.
        co2_t_s, co2_pct: CO2 readings (vol-%), empty without a CO2 step.
        n2_start_s, n2_end_s: The N2 step.
        co2_start_s: Start of the CO2 step (``None``: none); the O2 fit ends there.
    """

    flows: tuple[FlowStep, ...]
    o2_t_s: tuple[float, ...]
    o2_pct: tuple[float, ...]
    n2_start_s: float
    n2_end_s: float
    co2_t_s: tuple[float, ...] = ()
    co2_pct: tuple[float, ...] = ()
    co2_start_s: float | None = None


@dataclass(frozen=True, slots=True)
class Prior:
    """The site's nominal model: starting values of the fit and the MFC lag (not fitted)."""

    volume_l: float
    leak_lpm: float
    transport_delay_s: float
    o2_t63_s: float
    co2_t63_s: float
    mfc_tau_s: float = 0.5


@dataclass(frozen=True, slots=True)
class Estimate:
    """A fitted value and its standard uncertainty (1 sigma), same unit."""

    value: float
    sd: float

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.sd:.2g}"


@dataclass(frozen=True, slots=True)
class ChamberFit:
    """The identified chamber.

    Attributes:
        volume_l: Gas volume, L.
        leak_lpm: Leak exchange with room air, L/min.
        transport_delay_s: Delay from the chamber to the O2 sensor, s.
        o2_t63_s: O2 sensor first-order lag, s.
        o2_start_pct: Chamber O2 at the start, %.
        o2_rms_pct: Root-mean-square residual of the O2 fit, % abs.
        o2_model_pct: The fitted model at each O2 sample used (``o2_used`` of them).
        o2_used: Number of O2 samples fitted (those before the CO2 step).
        co2_t63_s: CO2 sensor lag, s (``None`` without a CO2 step).
        co2_rms_pct: Residual of the CO2 fit, % abs.
        co2_model_pct: The fitted CO2 model at every CO2 sample.
    """

    volume_l: Estimate
    leak_lpm: Estimate
    transport_delay_s: Estimate
    o2_t63_s: Estimate
    o2_start_pct: Estimate
    o2_rms_pct: float
    o2_model_pct: tuple[float, ...]
    o2_used: int
    co2_t63_s: Estimate | None = None
    co2_rms_pct: float | None = None
    co2_model_pct: tuple[float, ...] = ()

    @property
    def o2_dead_time_s(self) -> Estimate:
        """Transport delay + O2 sensor t63 (the loop's dead time before ½ period and filter)."""
        return Estimate(
            self.transport_delay_s.value + self.o2_t63_s.value,
            math.hypot(self.transport_delay_s.sd, self.o2_t63_s.sd),
        )


class IdentificationError(ValueError):
    """The record cannot be fitted (too few samples, no N2 step, a fit that diverges)."""


def _segments(
    flows: Sequence[FlowStep], shift_s: float
) -> list[tuple[float, tuple[float, float, float, float]]]:
    merged: list[tuple[float, tuple[float, float, float, float]]] = []
    for step in sorted(flows, key=lambda s: s.t_s):
        q = step.flows()
        if merged and merged[-1][1] == q:
            continue
        merged.append((step.t_s + shift_s, q))
    return merged


def chamber_fraction(
    grid_t_s: Array,
    flows: Sequence[FlowStep],
    volume_l: float,
    leak_lpm: float,
    x0: float,
    feed: tuple[float, float, float, float],
    leak_feed: float,
    mfc_tau_s: float = 0.0,
) -> Array:
    """The chamber's gas fraction at each grid time (exact solution per constant-flow segment).

    ``grid_t_s`` is sorted; before the first flow step the chamber stays at ``x0``. The MFC lag is
    taken as a delay of ``mfc_tau_s`` (the first-order lag's effect on a slow balance).
    """
    x = np.full(grid_t_s.shape, x0, dtype=np.float64)
    segments = _segments(flows, mfc_tau_s)
    if not segments:
        return x
    starts = np.array([s for s, _ in segments])
    index = np.searchsorted(starts, grid_t_s, side="right") - 1
    x_start = x0
    for k, (t_start, q) in enumerate(segments):
        t_end = segments[k + 1][0] if k + 1 < len(segments) else math.inf
        q_total = sum(q) + leak_lpm
        x_inf = (sum(qi * fi for qi, fi in zip(q, feed, strict=True)) + leak_lpm * leak_feed) / (
            q_total if q_total > 0 else 1.0
        )
        rate_per_s = q_total / (60.0 * volume_l)
        mask = index == k
        if q_total <= 0:
            x[mask] = x_start
        else:
            x[mask] = x_inf + (x_start - x_inf) * np.exp(-rate_per_s * (grid_t_s[mask] - t_start))
        if math.isfinite(t_end):
            x_start = (
                x_inf + (x_start - x_inf) * math.exp(-rate_per_s * (t_end - t_start))
                if q_total > 0
                else x_start
            )
    return x


def sensor_reading(
    grid_t_s: Array, chamber: Array, delay_s: float, t63_s: float, sample_t_s: Array
) -> Array:
    """What a sensor behind ``delay_s`` and a first-order lag ``t63_s`` reads at ``sample_t_s``.

    The grid must be evenly spaced; the sensor starts settled on the first chamber value.
    """
    delayed = np.interp(grid_t_s - delay_s, grid_t_s, chamber)
    h = float(grid_t_s[1] - grid_t_s[0]) if grid_t_s.size > 1 else 1.0
    alpha = 1.0 - math.exp(-h / t63_s) if t63_s > 0 else 1.0
    # exact step of the lag for an input held at the mean of the interval's two ends
    held = 0.5 * (delayed[1:] + delayed[:-1])
    out = [0.0] * delayed.size
    s = out[0] = float(delayed[0])
    for j, u in enumerate(held.tolist(), start=1):
        s += alpha * (u - s)
        out[j] = s
    reading: Array = np.interp(sample_t_s, grid_t_s, np.asarray(out))
    return reading


def _grid(record: IdentificationRecord, t_end_s: float, t63_s: float) -> Array:
    t0 = min(record.flows[0].t_s, record.o2_t_s[0]) - 1.0
    step = min(GRID_S, max(0.05, t63_s / 4.0))
    step = max(step, (t_end_s - t0) / MAX_GRID_POINTS)
    return np.arange(t0, t_end_s + step, step, dtype=np.float64)


def levenberg_marquardt(
    residuals: Callable[[Array], Array],
    p0: Array,
    steps: Array,
    lower: Array,
    upper: Array,
    max_iter: int = 60,
) -> tuple[Array, Array, Array]:
    """Minimise ``|residuals(p)|²`` within [lower, upper]; forward-difference Jacobian.

    Returns:
        The parameters, the Jacobian there and the residuals there.
    """
    p = np.clip(p0, lower, upper)
    r = residuals(p)
    cost = float(r @ r)
    damping = 1e-3
    jac = np.zeros((r.size, p.size))
    for _ in range(max_iter):
        for i in range(p.size):
            dp = np.zeros_like(p)
            dp[i] = steps[i] if p[i] + steps[i] <= upper[i] else -steps[i]
            jac[:, i] = (residuals(p + dp) - r) / dp[i]
        a = jac.T @ jac
        g = jac.T @ r
        improved = small = False
        while damping < 1e10:
            try:
                delta = np.linalg.solve(a + damping * np.diag(np.diag(a) + 1e-12), -g)
            except np.linalg.LinAlgError:
                damping *= 10.0
                continue
            p_new = np.clip(p + delta, lower, upper)
            r_new = residuals(p_new)
            cost_new = float(r_new @ r_new)
            if cost_new < cost:
                small = cost - cost_new < 1e-10 * cost
                p, r, cost, improved = p_new, r_new, cost_new, True
                damping = max(damping / 3.0, 1e-9)
                break
            damping *= 4.0
        if not improved or small:
            break
    for i in range(p.size):  # the Jacobian at the final point, for the covariance
        dp = np.zeros_like(p)
        dp[i] = steps[i] if p[i] + steps[i] <= upper[i] else -steps[i]
        jac[:, i] = (residuals(p + dp) - r) / dp[i]
    return p, jac, r


def _covariance(jac: Array, r: Array) -> Array:
    dof = max(1, r.size - jac.shape[1])
    sigma2 = float(r @ r) / dof
    try:
        cov: Array = sigma2 * np.linalg.pinv(jac.T @ jac)
        return cov
    except np.linalg.LinAlgError:  # pragma: no cover - pinv of a finite matrix converges
        return np.full((jac.shape[1], jac.shape[1]), np.inf)


def _slope(t: Array, y: Array) -> float:
    if t.size < 5:
        return math.nan
    return float(np.polyfit(t, y, 1)[0])


def initial_guess(
    record: IdentificationRecord, prior: Prior, t_end_s: float
) -> tuple[float, float, float]:
    """Volume (L), leak (L/min) and start O2 (%) from simple regressions, for the fit's start.

    The N2 decay gives V from ln(x) falling at Q_N/V; the closed rise gives Q_L from
    dx/dt = Q_L (x_a - x)/V. Either falls back to the prior when it has too few samples.
    """
    t, y = np.asarray(record.o2_t_s), np.asarray(record.o2_pct)
    before = y[t < record.n2_start_s + prior.transport_delay_s]
    x0 = float(np.median(before)) if before.size else float(y[0])
    lag = prior.transport_delay_s + 2.0 * prior.o2_t63_s
    n2 = [s.n2_lpm for s in record.flows if record.n2_start_s <= s.t_s < record.n2_end_s]
    q_n2 = max(n2) if n2 else 0.0
    fall = (t > record.n2_start_s + lag) & (t <= record.n2_end_s) & (y > 0.05)
    slope = _slope(t[fall], np.log(y[fall])) if fall.any() else math.nan
    volume = q_n2 / (-slope * 60.0) if math.isfinite(slope) and slope < 0 else prior.volume_l
    if not 0.05 * prior.volume_l < volume < 20.0 * prior.volume_l:
        volume = prior.volume_l
    rise = (t > record.n2_end_s + 2.0 * lag) & (t < t_end_s)
    rate = _slope(t[rise], y[rise]) if rise.any() else math.nan
    gap = 100.0 * X_AIR_O2 - float(np.mean(y[rise])) if rise.any() else 0.0
    leak = rate * 60.0 * volume / gap if math.isfinite(rate) and gap > 0.5 else prior.leak_lpm
    return volume, max(0.0, leak), x0


def fit_o2(record: IdentificationRecord, prior: Prior) -> ChamberFit:
    """Fit V, Q_L, the transport delay, the O2 sensor lag and the start O2 to the O2 readings.

    Raises:
        IdentificationError: Fewer than 30 O2 samples before the CO2 step, or no N2 step.
    """
    t_all, y_all = np.asarray(record.o2_t_s), np.asarray(record.o2_pct)
    t_end = record.co2_start_s if record.co2_start_s is not None else math.inf
    used = t_all < t_end
    t, y = t_all[used], y_all[used]
    if t.size < 30:
        raise IdentificationError(f"{t.size} O2 samples before the CO2 step: at least 30 needed")
    if record.n2_end_s <= record.n2_start_s:
        raise IdentificationError("no N2 step in the record: volume and delay are not observable")
    grid = _grid(record, float(t[-1]), prior.o2_t63_s)
    volume0, leak0, x0 = initial_guess(record, prior, float(t[-1]))
    flows = record.flows

    def model(p: Array) -> Array:
        chamber = chamber_fraction(
            grid, flows, math.exp(p[0]), p[1], p[4] / 100.0, O2_FEED, X_AIR_O2, prior.mfc_tau_s
        )
        return 100.0 * sensor_reading(grid, chamber, p[2], math.exp(p[3]), t)

    def residuals(p: Array) -> Array:
        r: Array = model(p) - y
        return r

    total = prior.transport_delay_s + prior.o2_t63_s
    lower = np.array([math.log(volume0 / 10), 0.0, 0.0, math.log(0.1), 0.0])
    upper = np.array([math.log(volume0 * 10), 50.0, 300.0, math.log(600.0), 100.0])
    steps = np.array([1e-4, 1e-4 * max(leak0, 0.01), 0.02, 1e-3, 1e-3])
    best: tuple[Array, Array, Array] | None = None
    for delay, lag in (
        (prior.transport_delay_s, prior.o2_t63_s),
        (0.25 * total, 0.75 * total),
        (0.75 * total, 0.25 * total),
    ):
        p0 = np.array([math.log(volume0), leak0, delay, math.log(max(lag, 0.2)), x0])
        found = levenberg_marquardt(residuals, p0, steps, lower, upper)
        if best is None or float(found[2] @ found[2]) < float(best[2] @ best[2]):
            best = found
    assert best is not None  # noqa: S101 - three starts always run
    p, jac, r = best
    sd = np.sqrt(np.clip(np.diag(_covariance(jac, r)), 0.0, None))
    volume, t63 = math.exp(p[0]), math.exp(p[3])
    return ChamberFit(
        volume_l=Estimate(volume, volume * float(sd[0])),
        leak_lpm=Estimate(float(p[1]), float(sd[1])),
        transport_delay_s=Estimate(float(p[2]), float(sd[2])),
        o2_t63_s=Estimate(t63, t63 * float(sd[3])),
        o2_start_pct=Estimate(float(p[4]), float(sd[4])),
        o2_rms_pct=float(np.sqrt(np.mean(r**2))),
        o2_model_pct=tuple(model(p).tolist()),
        o2_used=int(t.size),
    )


def fit_co2(record: IdentificationRecord, prior: Prior, o2: ChamberFit) -> ChamberFit:
    """Add the CO2 sensor's lag to ``o2`` from the CO2 readings (V, Q_L, delay held).

    Raises:
        IdentificationError: Fewer than 20 CO2 samples.
    """
    t, y = np.asarray(record.co2_t_s), np.asarray(record.co2_pct)
    if t.size < 20:
        raise IdentificationError(f"{t.size} CO2 samples: at least 20 needed for the CO2 lag")
    grid = _grid(record, float(t[-1]), prior.co2_t63_s)
    start = record.co2_start_s if record.co2_start_s is not None else float(t[0])
    c0 = float(np.median(y[t < start])) if (t < start).any() else float(y[0])

    def model(p: Array) -> Array:
        chamber = chamber_fraction(
            grid,
            record.flows,
            o2.volume_l.value,
            o2.leak_lpm.value,
            p[1] / 100.0,
            CO2_FEED,
            X_AIR_CO2,
            prior.mfc_tau_s,
        )
        reading = sensor_reading(grid, chamber, o2.transport_delay_s.value, math.exp(p[0]), t)
        return 100.0 * reading

    def residuals(p: Array) -> Array:
        r: Array = model(p) - y
        return r

    p, jac, r = levenberg_marquardt(
        residuals,
        np.array([math.log(max(prior.co2_t63_s, 0.5)), c0]),
        np.array([1e-3, 1e-3]),
        np.array([math.log(0.1), -5.0]),
        np.array([math.log(1200.0), 100.0]),
    )
    sd = np.sqrt(np.clip(np.diag(_covariance(jac, r)), 0.0, None))
    t63 = math.exp(p[0])
    return ChamberFit(
        volume_l=o2.volume_l,
        leak_lpm=o2.leak_lpm,
        transport_delay_s=o2.transport_delay_s,
        o2_t63_s=o2.o2_t63_s,
        o2_start_pct=o2.o2_start_pct,
        o2_rms_pct=o2.o2_rms_pct,
        o2_model_pct=o2.o2_model_pct,
        o2_used=o2.o2_used,
        co2_t63_s=Estimate(t63, t63 * float(sd[0])),
        co2_rms_pct=float(np.sqrt(np.mean(r**2))),
        co2_model_pct=tuple(model(p).tolist()),
    )


def fit_chamber(record: IdentificationRecord, prior: Prior) -> ChamberFit:
    """The whole fit: O2 (volume, leak, delay, O2 lag), then the CO2 lag if CO2 was recorded."""
    fit = fit_o2(record, prior)
    if record.co2_start_s is not None and record.co2_t_s:
        fit = fit_co2(record, prior, fit)
    return fit


def fit_warnings(fit: ChamberFit, noise_sd_pct: float = 0.02) -> list[str]:
    """What makes the fit doubtful: a relative uncertainty above 5 %, or a poor residual."""
    notes: list[str] = []
    for name, est in (("volume", fit.volume_l), ("leak", fit.leak_lpm)):
        if est.value > 0 and est.sd > 0.05 * est.value:
            notes.append(
                f"{name} uncertain (± {100 * est.sd / est.value:.0f} %): lengthen the leak watch "
                "or lower the O2 floor"
            )
    if fit.o2_rms_pct > max(5.0 * noise_sd_pct, 0.05):
        notes.append(
            f"O2 residual {fit.o2_rms_pct:.3f} % is well above the sensor noise: the chamber "
            "did not follow the balance (door or port opened, MFC not delivering, mixing)"
        )
    return notes
