"""Headspace observer: the chamber's true O2 and CO2, its volume and leak, and door events.

Why: the O2 and CO2 readings arrive through a transport delay and a first-order sensor lag (and
carry noise), so a loop that acts on the reading acts late and on noise. The observer runs the
headspace gas balance (docs/physics.md §B1) with the flows the controller actually applied, and
corrects it with the readings through the same delay and lag, so the loops get

* the chamber's O2 and CO2 *now* (the value a sensor would show one dead time later),
* the flow gain g = V_model / V_true and the leak exchange rate as slowly varying states
  (adaptation: the loops' feed-forward and gains use V_model / g and the estimated leak),
* a door (or any exchange with room air) as a fast state that the CO2 estimate shares, so the
  CO2 loop sees its loss long before its slow sensor does (docs/control.md §D1, row 6).

How: an extended Kalman filter on the *delayed* time axis. Its state is
``[z, s, g, l, d, a]``: z the chamber O2 entering the sensor now (the chamber one transport delay
ago), s the sensor's lag state (the reading without noise), g the flow gain, l the leak exchange
rate (1/s), d the door exchange rate (1/s, zero unless a door is open) and a the sensor's lag
per period, 1 - exp(-dt/t63) (a wrong t63 or transport delay in the model would otherwise bias
every estimate the purge hands over on; a purge's onset identifies it). The balance over one
control period is solved exactly for the flows held (as the plant does), the sensor lag is the
exact first-order step, and the measurement is y = s + noise. The chamber *now* is z carried
forward through the transport delay with the flows applied since (a Smith predictor whose model
is corrected by the filter). The CO2 filter ``[zc, sc, bc]`` shares g, l and d and adds its own
slowly varying rate bias bc.

Door detection without a door switch: the O2 reading rises faster than the balance explains
(normalised innovation above ``DOOR_SIGMAS`` while the reading climbs) -> the door state is
released with a large process noise; it is closed again once the innovations are quiet. With a
door switch the site's input decides instead.

Pure: no clock, no I/O; deterministic; :meth:`HeadspaceObserver.snapshot` /
:meth:`HeadspaceObserver.restore` carry the whole state (floats only) for an exact resume.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from controller.core.numeric import clip
from controller.core.observer_tuning import ObserverTuning
from controller.core.process import X_AIR_CO2, X_AIR_O2, ProcessModel

__all__ = ["Flows", "HeadspaceObserver", "ObserverTuning"]

Matrix = list[list[float]]

DOOR_SIGMAS = 6.0
GRID_GAIN = (0.7, 1.0, 1.4)
"""Multiplicative steps of the flow gain tried each period by the purge horizon."""
GRID_LAG = (0.8, 1.0, 1.25)
"""Multiplicative steps of the sensor lag tried each period by the purge horizon."""
"""Normalised innovation (O2 reading above the balance's prediction) that opens the door state."""


class Flows:
    """Mean inflows over one control period, L/min (what the observer believes was delivered).

    Immutable by convention (never assigned after construction). The sums the balance needs
    every period (``total``, ``o2_in``, ``co2_in``) are computed once here, not per use: the
    observer carries each period's flows through the transport delay once per period.
    """

    __slots__ = ("air", "co2", "co2_in", "n2", "o2", "o2_in", "total")

    def __init__(self, n2: float = 0.0, air: float = 0.0, o2: float = 0.0, co2: float = 0.0):
        self.n2 = n2
        self.air = air
        self.o2 = o2
        self.co2 = co2
        self.total = n2 + air + o2 + co2
        """Sum of the inflows, L/min."""
        self.o2_in = air * X_AIR_O2 + o2
        """O2 carried in by the inflows, L/min."""
        self.co2_in = co2 + air * X_AIR_CO2
        """CO2 carried in by the inflows, L/min."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Flows):
            return NotImplemented
        return (self.n2, self.air, self.o2, self.co2) == (other.n2, other.air, other.o2, other.co2)

    def __hash__(self) -> int:
        return hash((self.n2, self.air, self.o2, self.co2))

    def __repr__(self) -> str:
        return f"Flows(n2={self.n2!r}, air={self.air!r}, o2={self.o2!r}, co2={self.co2!r})"


def _predict_cov6(  # noqa: PLR0915 - unrolled on purpose
    p: Matrix,
    fz: tuple[float, float, float],
    leak: tuple[float, float],
    door: tuple[float, float],
    qz: float,
    qp: tuple[float, float, float, float],
) -> None:
    """P <- F P F^T + Q in place for the O2 filter's state [z, s, g, l, d, a].

    F = [[f00, 0, fp0], [f10, f11, fp1], [0, 0, I]] with ``fz`` = (f00, f10, f11); only the
    leak (state 3) and the door (state 4) have sensitivities, ``leak`` and ``door`` = their
    (fp0, fp1) entries (a parameter whose both are zero is skipped). Q adds ``qz`` on z (passed
    to s through F) and ``qp`` on states 2..5. Only rows and columns 0 and 1 change; unrolled
    over the six states (no allocation: this runs every period).
    """
    f00, f10, f11 = fz
    c3, d3 = leak
    c4, d4 = door
    p0, p1, p2, p3, p4, p5 = p
    u0, u1, u2, u3, u4, u5 = p0
    v0, v1, v2, v3, v4, v5 = p1
    a0, a1, a2, a3, a4, a5 = f00 * u0, f00 * u1, f00 * u2, f00 * u3, f00 * u4, f00 * u5
    b0 = f10 * u0 + f11 * v0
    b1 = f10 * u1 + f11 * v1
    b2 = f10 * u2 + f11 * v2
    b3 = f10 * u3 + f11 * v3
    b4 = f10 * u4 + f11 * v4
    b5 = f10 * u5 + f11 * v5
    sens3 = c3 != 0.0 or d3 != 0.0
    sens4 = c4 != 0.0 or d4 != 0.0
    if sens3:
        r0, r1, r2, r3, r4, r5 = p3
        a0, a1, a2 = a0 + c3 * r0, a1 + c3 * r1, a2 + c3 * r2
        a3, a4, a5 = a3 + c3 * r3, a4 + c3 * r4, a5 + c3 * r5
        b0, b1, b2 = b0 + d3 * r0, b1 + d3 * r1, b2 + d3 * r2
        b3, b4, b5 = b3 + d3 * r3, b4 + d3 * r4, b5 + d3 * r5
    if sens4:
        r0, r1, r2, r3, r4, r5 = p4
        a0, a1, a2 = a0 + c4 * r0, a1 + c4 * r1, a2 + c4 * r2
        a3, a4, a5 = a3 + c4 * r3, a4 + c4 * r4, a5 + c4 * r5
        b0, b1, b2 = b0 + d4 * r0, b1 + d4 * r1, b2 + d4 * r2
        b3, b4, b5 = b3 + d4 * r3, b4 + d4 * r4, b5 + d4 * r5
    n00 = f00 * a0
    n01 = f10 * a0 + f11 * a1
    n11 = f10 * b0 + f11 * b1
    if sens3:
        n00 += c3 * a3
        n01 += d3 * a3
        n11 += d3 * b3
    if sens4:
        n00 += c4 * a4
        n01 += d4 * a4
        n11 += d4 * b4
    share = f10 / f00 if f00 > 0.0 else 0.0
    p0[0] = n00 + qz
    p0[1] = p1[0] = n01 + share * qz
    p1[1] = n11 + share * share * qz
    p0[2] = p2[0] = a2
    p1[2] = p2[1] = b2
    p2[2] += qp[0]
    p0[3] = p3[0] = a3
    p1[3] = p3[1] = b3
    p3[3] += qp[1]
    p0[4] = p4[0] = a4
    p1[4] = p4[1] = b4
    p4[4] += qp[2]
    p0[5] = p5[0] = a5
    p1[5] = p5[1] = b5
    p5[5] += qp[3]


def _correct6(w: list[float], p: Matrix, e: float, r: float, frozen: tuple[int, ...]) -> float:
    """Kalman update of the O2 filter for the measurement y = s (state 1) + noise of variance r.

    States in ``frozen`` keep their values (Schmidt "consider" update, Joseph form so that the
    covariance stays consistent with the suboptimal gain). P - k row^T - row k^T + k S k^T
    touches only the rows and columns of updated states; each such row is rebuilt whole
    (unrolled: six states), except the pairs of updated states done before. Returns the
    normalised innovation.
    """
    y0, y1, y2, y3, y4, y5 = p[1]
    s_inn = y1 + r
    k = [y0 / s_inn, y1 / s_inn, y2 / s_inn, y3 / s_inn, y4 / s_inn, y5 / s_inn]
    for i in frozen:
        k[i] = 0.0
    k0, k1, k2, k3, k4, k5 = k
    row = (y0, y1, y2, y3, y4, y5)
    done: list[int] = []
    for i, ki in enumerate(k):
        if ki == 0.0:
            continue
        w[i] += ki * e
    for i, ki in enumerate(k):
        if ki == 0.0:
            continue
        ri = row[i]
        kis = ki * s_inn
        old = p[i]
        x0, x1, x2, x3, x4, x5 = old
        new = [
            x0 - ki * y0 - ri * k0 + kis * k0,
            x1 - ki * y1 - ri * k1 + kis * k1,
            x2 - ki * y2 - ri * k2 + kis * k2,
            x3 - ki * y3 - ri * k3 + kis * k3,
            x4 - ki * y4 - ri * k4 + kis * k4,
            x5 - ki * y5 - ri * k5 + kis * k5,
        ]
        for j in done:
            new[j] = old[j]
        p[i] = new
        q0, q1, q2, q3, q4, q5 = p
        q0[i], q1[i], q2[i], q3[i], q4[i], q5[i] = new
        done.append(i)
    return e / math.sqrt(s_inn)


def _predict_cov3(
    p: Matrix, fz: tuple[float, float, float], bias: tuple[float, float], qz: float, qb: float
) -> None:
    """P <- F P F^T + Q in place for the CO2 filter's states [z, s, b] (b: a random walk).

    F = [[f00, 0, c], [f10, f11, d], [0, 0, 1]] with ``fz`` = (f00, f10, f11) and ``bias`` =
    (c, d); Q adds ``qz`` on z (passed to s through F) and ``qb`` on b. Same arithmetic as
    :func:`_predict_cov6`.
    """
    f00, f10, f11 = fz
    c, d = bias
    p0, p1, p2 = p
    u0, u1, u2 = p0
    v0, v1, v2 = p1
    a0, a1, a2 = f00 * u0, f00 * u1, f00 * u2
    b0, b1, b2 = f10 * u0 + f11 * v0, f10 * u1 + f11 * v1, f10 * u2 + f11 * v2
    sens = c != 0.0 or d != 0.0
    if sens:
        r0, r1, r2 = p2
        a0, a1, a2 = a0 + c * r0, a1 + c * r1, a2 + c * r2
        b0, b1, b2 = b0 + d * r0, b1 + d * r1, b2 + d * r2
    n00 = f00 * a0
    n01 = f10 * a0 + f11 * a1
    n11 = f10 * b0 + f11 * b1
    if sens:
        n00 += c * a2
        n01 += d * a2
        n11 += d * b2
    share = f10 / f00 if f00 > 0.0 else 0.0
    p0[0] = n00 + qz
    p0[1] = p1[0] = n01 + share * qz
    p1[1] = n11 + share * share * qz
    p0[2] = p2[0] = a2
    p1[2] = p2[1] = b2
    p2[2] += qb


def _correct3(w: list[float], p: Matrix, e: float, r: float) -> float:
    """:func:`_correct6` for the CO2 filter's three states, none frozen."""
    y0, y1, y2 = p[1]
    s_inn = y1 + r
    k = (y0 / s_inn, y1 / s_inn, y2 / s_inn)
    k0, k1, k2 = k
    row = (y0, y1, y2)
    for i, ki in enumerate(k):
        if ki != 0.0:
            w[i] += ki * e
    done: list[int] = []
    for i, ki in enumerate(k):
        if ki == 0.0:
            continue
        ri = row[i]
        kis = ki * s_inn
        old = p[i]
        x0, x1, x2 = old
        new = [
            x0 - ki * y0 - ri * k0 + kis * k0,
            x1 - ki * y1 - ri * k1 + kis * k1,
            x2 - ki * y2 - ri * k2 + kis * k2,
        ]
        for j in done:
            new[j] = old[j]
        p[i] = new
        q0, q1, q2 = p
        q0[i], q1[i], q2[i] = new
        done.append(i)
    return e / math.sqrt(s_inn)


def _lag(dt: float, t63: float) -> float:
    """Per-period coefficient of a first-order lag of time constant ``t63``."""
    return 1.0 - math.exp(-dt / t63) if t63 > 0 else 1.0


@dataclass(slots=True)
class Fit:
    """One candidate explanation of a purge horizon.

    Attributes:
        delay: Transport delay, whole periods.
        lag_prior: Prior of the sensor lag per period for this delay (the total dead time's
            prior less the delay).
        lag_log_var: Prior variance of ln(lag) for this delay.
        gain: Flow gain g.
        lag: Sensor lag per period a.
        cost: Regularised least-squares cost.
        x_now: Chamber fraction now.
        x_delayed: Chamber fraction one delay ago (what enters the sensor now).
        s_now: Sensor lag state now.
        jz / js: Sensitivities of ``x_delayed`` and ``s_now`` to (g, a).
        info: [Jg.Jg, Jg.Ja, Ja.Ja, Jg.r, Ja.r, r.r] of the readings.
        damping: Levenberg-Marquardt damping.
    """

    delay: int
    lag_prior: float
    lag_log_var: float
    gain: float
    lag: float
    cost: float = math.inf
    x_now: float = 0.0
    x_delayed: float = 0.0
    s_now: float = 0.0
    jz: tuple[float, float] = (0.0, 0.0)
    js: tuple[float, float] = (0.0, 0.0)
    info: list[float] = field(default_factory=lambda: [0.0] * 6)
    damping: float = 1e-3

    def as_list(self) -> list[float]:
        """The fit's free values (the rest is recomputed from the horizon)."""
        return [
            float(self.delay),
            self.lag_prior,
            self.lag_log_var,
            self.gain,
            self.lag,
            self.damping,
        ]

    @classmethod
    def from_list(cls, v: list[float]) -> Fit:
        """Inverse of :meth:`as_list`."""
        return cls(
            int(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4]), damping=float(v[5])
        )


@dataclass(slots=True)
class PurgeHorizon:
    """A purge's moving horizon: its start, the priors, what happened since, the candidates.

    The chamber starts settled at ``x0`` (so it was x0 for as long as any delay looks back) and
    the sensor at ``s0``; ``flows[j]`` were applied over period j and ``readings[j]`` read at its
    end. Each candidate delay keeps its own (g, a) fit, warm-started every period. Priors:
    ln g ~ N(ln g0, ``gain_log_var``); per candidate ln a ~ N(ln lag_prior, lag_log_var), from a
    prior on the *total* dead time (delay + lag): a delay the model has wrong by a period must
    not squeeze the lag prior.
    """

    x0: float
    s0: float
    g0: float
    gain_log_var: float
    dt: float
    candidates: list[Fit]
    flows: list[Flows] = field(default_factory=list)
    readings: list[float | None] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        x0: float,
        s0: float,
        gain: tuple[float, float],
        lag: tuple[float, float],
        delay: int,
        spread: int,
        dt: float,
    ) -> PurgeHorizon:
        """Open a horizon from (mean, variance) priors of g and a.

        Candidate delays ``delay`` +/- ``spread`` keep the prior's total dead time (a period
        more delay, a period less lag).
        """
        g0, a0 = gain[0], lag[0]
        t63 = -dt / math.log(1.0 - min(max(a0, 1e-9), 1.0 - 1e-12))
        total = delay * dt + t63
        total_sd = math.sqrt(max(lag[1], 1e-18)) / a0 * t63  # ~ relative sd of t63, absolute
        fits = []
        for d in range(max(0, delay - spread), delay + spread + 1):
            t63_d = max(total - d * dt, 0.3 * dt)
            a_d = _lag(dt, t63_d)
            log_var = min((total_sd / t63_d) ** 2, 1.0)
            fits.append(Fit(d, a_d, log_var, g0, a_d))
        gain_log_var = max(gain[1], 1e-12) / (g0 * g0)
        return cls(x0, s0, g0, gain_log_var, dt, fits)

    def fit(
        self,
        volume_l: float,
        leak: float,
        r: float,
        gain_range: tuple[float, float],
        lag_range: tuple[float, float],
    ) -> Fit:
        """Advance every candidate's Levenberg-Marquardt fit by up to two steps; the best."""
        best: Fit | None = None
        for n, c in enumerate(self.candidates):
            cur = c
            self._evaluate(cur, cur.gain, cur.lag, volume_l, leak, r)
            # a coarse multiplicative grid first: from a far start (a volume wrong by 4x) the
            # local steps alone can run the lag into a bound before the gain gets there
            for fg in GRID_GAIN:
                for fa in GRID_LAG:
                    if fg == 1.0 and fa == 1.0:
                        continue
                    g = min(max(cur.gain * fg, gain_range[0]), gain_range[1])
                    a = min(max(cur.lag * fa, lag_range[0]), lag_range[1])
                    trial = Fit(
                        cur.delay, cur.lag_prior, cur.lag_log_var, g, a, damping=cur.damping
                    )
                    self._evaluate(trial, g, a, volume_l, leak, r)
                    if trial.cost < cur.cost:
                        cur = trial
            for _ in range(2):
                step = self._lm_step(cur, r)
                if step is None:
                    break
                g = min(max(cur.gain * math.exp(step[0]), gain_range[0]), gain_range[1])
                a = min(max(cur.lag * math.exp(step[1]), lag_range[0]), lag_range[1])
                trial = Fit(cur.delay, cur.lag_prior, cur.lag_log_var, g, a, damping=cur.damping)
                self._evaluate(trial, g, a, volume_l, leak, r)
                if trial.cost < cur.cost:
                    trial.damping = max(cur.damping / 10.0, 1e-6)
                    cur = trial
                else:
                    cur.damping = min(cur.damping * 10.0, 1e6)
            self.candidates[n] = cur
            if best is None or cur.cost < best.cost:
                best = cur
        assert best is not None  # noqa: S101 - there is always a candidate
        return best

    def blended_x_now(self) -> float:
        """The chamber now, averaged over the candidates with posterior weights exp(-cost / 2).

        While the delays still compete the estimate does not jump between them.
        """
        low = min(c.cost for c in self.candidates)
        weights = [math.exp(-0.5 * (c.cost - low)) for c in self.candidates]
        total = math.fsum(weights)
        return math.fsum(w * c.x_now for w, c in zip(weights, self.candidates, strict=True)) / total

    def _evaluate(self, c: Fit, g: float, a: float, volume_l: float, leak: float, r: float) -> None:
        """Replay the horizon for ``c``'s delay with (g, a): cost, states, sensitivities."""
        vol = 60.0 * volume_l
        k = g / vol
        dt, d, x0 = self.dt, c.delay, self.x0
        xs, xg = [x0], [0.0]
        x, dxg = x0, 0.0
        s, sg, sa = self.s0, 0.0, 0.0
        info = [0.0] * 6
        for j, f in enumerate(self.flows):
            b = f.total * k + leak
            cc = f.o2_in * k + leak * X_AIR_O2
            db, dc = f.total / vol, f.o2_in / vol
            e = math.exp(-b * dt)
            if b > 1e-15:
                v = cc / b
                dv = (dc * b - cc * db) / (b * b)
                dxg = dv + (dxg - dv) * e - (x - v) * dt * db * e
                x = v + (x - v) * e
            else:
                x += cc * dt
                dxg += dc * dt
            xs.append(x)
            xg.append(dxg)
            i = j + 1 - d
            u_in, u_g = (xs[i], xg[i]) if i > 0 else (x0, 0.0)
            sa += (u_in - s) - a * sa
            sg += a * (u_g - sg)
            s += a * (u_in - s)
            y = self.readings[j]
            if y is not None:
                res = y - s
                info[0] += sg * sg
                info[1] += sg * sa
                info[2] += sa * sa
                info[3] += sg * res
                info[4] += sa * res
                info[5] += res * res
        lg, la = math.log(g / self.g0), math.log(a / c.lag_prior)
        c.gain, c.lag, c.info = g, a, info
        c.cost = info[5] / r + lg * lg / self.gain_log_var + la * la / c.lag_log_var
        c.x_now = x
        i = len(xs) - 1 - d
        c.x_delayed, c.s_now = (xs[i] if i > 0 else x0), s
        c.jz = (xg[i] if i > 0 else 0.0, 0.0)
        c.js = (sg, sa)

    def _lm_step(self, c: Fit, r: float) -> tuple[float, float] | None:
        """Damped Gauss-Newton step of ``c`` in (ln g, ln a); ``None`` if singular."""
        info, g, a = c.info, c.gain, c.lag
        wg, wa = 1.0 / self.gain_log_var, 1.0 / c.lag_log_var
        m00 = (info[0] * g * g / r + wg) * (1.0 + c.damping)
        m01 = info[1] * g * a / r
        m11 = (info[2] * a * a / r + wa) * (1.0 + c.damping)
        b0 = info[3] * g / r - wg * math.log(g / self.g0)
        b1 = info[4] * a / r - wa * math.log(a / c.lag_prior)
        det = m00 * m11 - m01 * m01
        if det <= 0.0:
            return None
        limit = 0.4  # at most x1.5 per iteration
        d0 = (m11 * b0 - m01 * b1) / det
        d1 = (m00 * b1 - m01 * b0) / det
        return max(-limit, min(limit, d0)), max(-limit, min(limit, d1))

    def as_dict(self) -> dict[str, Any]:
        """Plain data for a snapshot."""
        return {
            "x0": self.x0,
            "s0": self.s0,
            "g0": self.g0,
            "gain_log_var": self.gain_log_var,
            "dt": self.dt,
            "candidates": [c.as_list() for c in self.candidates],
            "flows": [[f.n2, f.air, f.o2, f.co2] for f in self.flows],
            "readings": list(self.readings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PurgeHorizon:
        """Inverse of :meth:`as_dict`."""
        return cls(
            float(data["x0"]),
            float(data["s0"]),
            float(data["g0"]),
            float(data["gain_log_var"]),
            float(data["dt"]),
            [Fit.from_list(c) for c in data["candidates"]],
            [Flows(*(float(v) for v in f)) for f in data["flows"]],
            [None if y is None else float(y) for y in data["readings"]],
        )


class HeadspaceObserver:
    """Kalman filter of the headspace O2 and CO2 with transport delay and sensor lags.

    Args:
        model: The controller's process model (volume, leak, delays, sensor lags, noise).
        tuning: Process noise and adaptation limits.
    """

    N = 6
    """O2 filter states: z, s, g, l, d, a."""

    def __init__(self, model: ProcessModel, tuning: ObserverTuning | None = None) -> None:
        self.model = model
        self.tuning = t = tuning or ObserverTuning()
        dt = model.control_period_s
        self.dt = dt
        self.delay = max(0, round(model.transport_delay_s / dt))
        # the lag state also carries the transport delay's rounding and error: t63 + rounding
        t63 = model.o2_sensor_t63_s + (model.transport_delay_s - self.delay * dt)
        self.alpha = _lag(dt, max(t63, 0.0))
        total = self.delay * dt + t63
        self.alpha_range = (_lag(dt, 2.0 * total), _lag(dt, 0.3 * dt)) if t63 > 0 else (1.0, 1.0)
        self.alpha_c = _lag(dt, model.co2_sensor_t63_s)
        self.r_o2 = (model.o2_noise_sd_pct / 100.0) ** 2
        self.r_co2 = (model.co2_noise_sd_pct / 100.0) ** 2
        self.base_leak_nominal = model.leak_lpm / (60.0 * model.volume_l)  # 1/s, model volume
        self.base_leak_scale = (model.leak_lpm + t.leak_floor_lpm) / (60.0 * model.volume_l)
        self.leak_nominal = self.base_leak_nominal  # follow the learned volume
        self.leak_scale = self.base_leak_scale
        self.mfc_decay = math.exp(-dt / model.mfc_tau_s) if model.mfc_tau_s > 0 else 0.0
        self.mfc_mean = (
            model.mfc_tau_s / dt * (1.0 - self.mfc_decay) if model.mfc_tau_s > 0 else 0.0
        )
        # the process noise's constant variances, squared once
        self._q_chamber = t.chamber_sd**2
        self._q_gain = t.gain_sd**2
        self._q_door = t.door_sd**2
        self._q_lag = (t.lag_walk_sd * self.alpha) ** 2
        self._q_co2_bias = t.co2_bias_sd**2
        self.started = False
        self.w = [X_AIR_O2, X_AIR_O2, 1.0, self.leak_nominal, 0.0, self.alpha]
        self.p: Matrix = [[0.0] * self.N for _ in range(self.N)]
        self.co2_started = False
        self.wc = [0.0, 0.0, 0.0]  # zc, sc, bc
        self.pc: Matrix = [[0.0] * 3 for _ in range(3)]
        self.history: deque[Flows] = deque([Flows()] * (self.delay + 1), maxlen=self.delay + 1)
        self.actual = [0.0, 0.0, 0.0, 0.0]  # MFC outputs at the end of the last period, L/min
        self.door = False
        self.quiet_s = 0.0
        self.door_peak = 0.0
        self.purging = False
        self.anchor: PurgeHorizon | None = None
        self.volume_known = False  # a purge horizon has fitted the volume
        self.readings: deque[float] = deque(maxlen=4)  # the last O2 readings (rise detection)
        settle = 3.0 * (self.delay * dt + model.o2_sensor_t63_s)
        self.recent: deque[float] = deque(maxlen=max(3, math.ceil(settle / dt)))  # O2 readings
        self.anchor_steps = 0
        self.o2_now = X_AIR_O2
        self.co2_now = math.nan
        self.innovation = 0.0

    # ------------------------------------------------------------------------------ adaptation
    @property
    def gain(self) -> float:
        """Estimated flow gain g = V_model / V_true (1 when the model's volume is right)."""
        return self.w[2]

    @property
    def volume_l(self) -> float:
        """Adapted chamber volume V_model / g, L."""
        return self.model.volume_l / self.w[2]

    @property
    def leak_lpm(self) -> float:
        """Adapted leak exchange flow, L/min."""
        return max(self.w[3], 0.0) * 60.0 * self.volume_l

    @property
    def door_lpm(self) -> float:
        """Estimated door exchange flow now, L/min (0 with the door shut)."""
        return max(self.w[4], 0.0) * 60.0 * self.volume_l

    @property
    def o2_t63_s(self) -> float:
        """Adapted O2 sensor lag including the transport delay's rounding, s."""
        a = min(max(self.w[5], 1e-9), 1.0 - 1e-12)
        return -self.dt / math.log(1.0 - a)

    @property
    def o2_sd(self) -> float:
        """Standard deviation of the O2 estimate (the filter's posterior), fraction."""
        return math.sqrt(max(self.p[0][0], 0.0))

    @property
    def co2_sd(self) -> float:
        """Standard deviation of the CO2 estimate, fraction."""
        return math.sqrt(max(self.pc[0][0], 0.0))

    def adapted(self) -> dict[str, float]:
        """What the observer has learned: volume (L), leak (L/min), flow gain, O2 sensor lag (s)."""
        return {
            "volume_l": self.volume_l,
            "leak_lpm": self.leak_lpm,
            "gain": self.gain,
            "o2_lag_s": self.o2_t63_s + self.delay * self.dt,
        }

    # -------------------------------------------------------------------------------- stepping
    def update(
        self,
        commanded: Flows,
        o2: float | None,
        co2: float | None,
        door_open: bool | None = None,
        purging: bool = False,
    ) -> None:
        """Advance one control period.

        Args:
            commanded: Flows commanded for the period that just ended, L/min.
            o2: O2 reading at its end (fraction), ``None`` when untrusted.
            co2: CO2 reading at its end (fraction), ``None`` when untrusted.
            door_open: The door switch where the site has one (``None``: detect).
            purging: A loop ran at full actuation (the volume is identified then).
        """
        if purging and not self.purging and self.started and not self.door and self._settled():
            self._anchor()
        elif not purging:
            self.anchor = None
        self.purging = purging
        applied = self._through_mfc(commanded)
        if not self.started:
            if o2 is not None:
                self._start(o2, co2, applied)
            return
        self.history.append(applied)
        delayed = self.history[0]
        if door_open is not None:
            self._door_switch(door_open)
        self._predict_o2(delayed)
        if o2 is not None:
            self._correct_o2(o2, detect=door_open is None)
        self._clamp()
        fitted = self._horizon(applied, o2) if self.anchor is not None else None
        if self.co2_started:
            self._predict_co2(delayed)
            if co2 is not None:
                _correct3(self.wc, self.pc, co2 - self.wc[1], self.r_co2)
                self.wc[0] = clip(self.wc[0], 0.0, 1.0)
        elif co2 is not None:
            self._start_co2(co2)
        self._forward()
        if fitted is not None:  # inside the horizon its fit is the chamber now
            self.o2_now = fitted

    def _through_mfc(self, commanded: Flows) -> Flows:
        """Mean flows over the period behind a first-order MFC lag (exact, as the plant)."""
        if self.mfc_decay <= 0.0:
            return commanded
        act, mean, decay = self.actual, self.mfc_mean, self.mfc_decay
        n2, air, o2, co2 = commanded.n2, commanded.air, commanded.o2, commanded.co2
        f0, f1, f2, f3 = act
        act[0] = n2 + (f0 - n2) * decay
        act[1] = air + (f1 - air) * decay
        act[2] = o2 + (f2 - o2) * decay
        act[3] = co2 + (f3 - co2) * decay
        return Flows(
            n2 + (f0 - n2) * mean,
            air + (f1 - air) * mean,
            o2 + (f2 - o2) * mean,
            co2 + (f3 - co2) * mean,
        )

    def _start(self, o2: float, co2: float | None, applied: Flows) -> None:
        self.started = True
        self.history.extend([applied] * (self.delay + 1))
        self.w = [o2, o2, 1.0, self.leak_nominal, 0.0, self.alpha]
        sd0 = 2.0 * self.model.o2_noise_sd_pct / 100.0
        p = [[0.0] * self.N for _ in range(self.N)]
        p[0][0] = p[1][1] = p[0][1] = p[1][0] = sd0 * sd0
        p[2][2] = 0.5**2  # +/- 50 % volume
        p[3][3] = self.leak_scale**2
        p[5][5] = (self.tuning.lag_sd * self.alpha) ** 2
        self.p = p
        if co2 is not None:
            self._start_co2(co2)
        self._forward()

    def _start_co2(self, co2: float) -> None:
        self.co2_started = True
        v = (2.0 * self.model.co2_noise_sd_pct / 100.0) ** 2
        self.wc = [co2, co2, 0.0]
        self.pc = [[v, v, 0.0], [v, v, 0.0], [0.0, 0.0, 0.0]]

    def _door_switch(self, door_open: bool) -> None:
        if door_open and not self.door:
            self._open_door()
        elif not door_open and self.door:
            self._close_door()

    def _open_door(self) -> None:
        self.door = True
        self.quiet_s = 0.0
        self.door_peak = 0.0

    def _close_door(self) -> None:
        self.door = False
        self.w[4] = 0.0
        for i in range(self.N):
            self.p[4][i] = self.p[i][4] = 0.0

    def _predict_o2(self, u: Flows) -> None:
        w, dt, t = self.w, self.dt, self.tuning
        z, s, g, leak, door, a = w
        scale = 1.0 / (60.0 * self.model.volume_l)
        k = g * scale
        exch = leak + door
        inflow = u.total * k
        # _step (inlined: its decay is the transition phi of the covariance too)
        b = inflow + exch
        phi = math.exp(-b * dt)
        carried = u.o2_in * k + exch * X_AIR_O2
        if b <= 1e-15:
            z_new = z + carried * dt
        else:
            v_inf = carried / b
            z_new = v_inf + (z - v_inf) * phi
        # sensitivities over one period (first order in dt is enough for the covariance)
        fg = dt * (u.o2_in - u.total * z) * scale
        fl = dt * (X_AIR_O2 - z)
        fd = fl if self.door else 0.0
        w[0] = z_new
        w[1] = s + a * (z_new - s)
        # the running filter takes the volume and the lag as known (only a purge horizon learns
        # them), so their uncertainty does not make it react harder: it is then exactly the
        # [chamber, sensor, leak] filter that loop_analysis analyses
        del fg
        if self.purging:  # the leak is frozen in purges: known to the filter, like g and a
            fl = 0.0
        # fp0 = [0, fl, fd, 0], fp1 = a fp0 (g and a have none: see above)
        # g and a random-walk slowly so that the next purge horizon may re-learn them
        qp = (
            self._q_gain,
            (t.leak_sd * self.leak_scale) ** 2,
            self._q_door if self.door else 0.0,
            self._q_lag,
        )
        fz = (phi, a * phi, 1.0 - a)
        _predict_cov6(self.p, fz, (fl, a * fl), (fd, a * fd), self._q_chamber, qp)

    def _correct_o2(self, y: float, detect: bool) -> None:
        self.readings.append(y)
        self.recent.append(y)
        e = y - self.w[1]
        nu = e / math.sqrt(self.p[1][1] + self.r_o2)
        self.innovation = nu
        if detect:
            self._detect_door(nu)
        # the volume and the sensor lag are learned by the purge horizon only (a settled start,
        # strong excitation); the running filter keeps them and learns the leak, except from a
        # reading far off the balance that is not (yet) a door
        frozen: tuple[int, ...] = (2, 5)
        if self.anchor is not None:
            # the horizon fits the purge: the filter corrects nothing meanwhile (its own chamber
            # prediction is stale, so a leak learned from its innovations would be a phantom)
            frozen = (0, 1, 2, 3, 4, 5)
        if not self.door:
            frozen = (*frozen, 4)
            if abs(nu) > 4.0 and not self.purging:
                frozen = (*frozen, 3)
        else:
            frozen = (*frozen, 3)  # a door is not a leak
        if self.purging:
            frozen = (*frozen, 3)  # next to full-flow purges a leak is unobservable
        _correct6(self.w, self.p, e, self.r_o2, frozen)

    def _detect_door(self, nu: float) -> None:
        """Door detection from the O2 rise.

        Open on a reading far above the balance; close once the estimated exchange has fallen
        below ``door_close_share`` of its peak for ``quiet_s``.
        """
        if not self.door:
            # far above the balance *and* rising beyond noise over the last periods: a purge
            # whose model is still wrong falls slower than predicted but does not rise
            if nu <= DOOR_SIGMAS:
                return
            rise = self.readings[-1] - self.readings[0] if len(self.readings) > 1 else 0.0
            if rise > DOOR_SIGMAS * math.sqrt(2.0 * self.r_o2):
                self._open_door()
            return
        d = self.w[4]
        self.door_peak = max(self.door_peak, d)
        low = d <= self.tuning.door_close_share * self.door_peak
        self.quiet_s = self.quiet_s + self.dt if low else 0.0
        if self.quiet_s >= self.tuning.quiet_s:
            self._close_door()

    def _clamp(self) -> None:
        w, t = self.w, self.tuning
        z, s, g, leak, door, a = w
        # clip() written out: this runs every period and the values are nearly always inside
        if not 0.0 <= z <= 1.0:
            w[0] = clip(z, 0.0, 1.0)
        if not 0.0 <= s <= 1.0:
            w[1] = clip(s, 0.0, 1.0)
        if not t.gain_min <= g <= t.gain_max:
            w[2] = clip(g, t.gain_min, t.gain_max)
        top = t.leak_max_factor * self.leak_scale
        if not 0.0 <= leak <= top:
            w[3] = clip(leak, 0.0, top)
        w[4] = max(door, 0.0) if self.door else 0.0
        lo, hi = self.alpha_range
        if not lo <= a <= hi:
            w[5] = clip(a, lo, hi)

    def _predict_co2(self, u: Flows) -> None:
        w, dt, a = self.wc, self.dt, self.alpha_c
        z, s, bias = w
        k = self.w[2] / (60.0 * self.model.volume_l)
        exch = self.w[3] + self.w[4]
        inflow = u.total * k
        b = inflow + exch  # _step inlined, as in _predict_o2
        phi = math.exp(-b * dt)
        carried = u.co2_in * k + bias + exch * X_AIR_CO2
        if b <= 1e-15:
            z_new = z + carried * dt
        else:
            v_inf = carried / b
            z_new = v_inf + (z - v_inf) * phi
        w[0] = z_new
        w[1] = s + a * (z_new - s)
        qz = self._q_chamber
        if self.door:  # the door's CO2 loss comes through the shared exchange rate, uncertain
            qz += (math.sqrt(max(self.p[4][4], 0.0)) * dt * z) ** 2
        _predict_cov3(self.pc, (phi, a * phi, 1.0 - a), (dt, a * dt), qz, self._q_co2_bias)

    def _settled(self) -> bool:
        """The O2 readings have drifted by no more than 3 sigma per dead time.

        A horizon needs a settled start: it assumes the chamber was at its start value as far as
        any delay and lag look back, so a drift over one dead time must be small next to the
        noise. Judged on the readings (a wrong model can bias the estimate): the window spans
        three dead times, the means of its first and last thirds lie two dead times apart.
        """
        window = list(self.recent)
        if len(window) < (self.recent.maxlen or 0):
            return False
        third = max(1, len(window) // 3)
        head = math.fsum(window[:third]) / third
        tail = math.fsum(window[-third:]) / third
        return abs(tail - head) <= 6.0 * math.sqrt(self.r_o2)

    def _level(self) -> float:
        """The chamber's settled value: the mean of the last third of the readings."""
        window = list(self.recent)
        third = max(1, len(window) // 3)
        return math.fsum(window[-third:]) / third

    def _anchor(self) -> None:
        """A purge starts from a settled chamber: open its moving horizon."""
        t = self.tuning
        level = self._level()  # a settled chamber reads its own value
        self.anchor = PurgeHorizon.start(
            x0=level,
            s0=level,
            gain=(self.w[2], self.p[2][2]),
            lag=(self.w[5], self.p[5][5]),
            delay=self.delay,
            spread=t.delay_candidates,
            dt=self.dt,
        )
        self.anchor_steps = max(
            1, math.ceil(t.anchor_dead_times * (self.delay * self.dt + self.o2_t63_s))
        )

    def _horizon(self, u: Flows, y: float | None) -> float | None:
        """Moving-horizon estimate of the anchored purge (docs/control.md §D3.2).

        A purge from a settled chamber is fully determined by its start, the applied flows and
        three parameters: the flow gain g, the transport delay (whole periods) and the sensor
        lag. For each candidate delay a Levenberg-Marquardt fit of (g, lag) on the readings since
        the start (the filter's values as prior) scores the horizon; the best gives the chamber
        now. A sequential filter splits an early, nonlinear misfit of the volume between the
        level and the parameters and keeps a lasting level error; a model delay that is wrong
        by a period biases any lag-only fit. After ``anchor_dead_times`` dead times the filter
        takes over with the fit's delay, states and covariance.
        """
        h = self.anchor
        assert h is not None  # noqa: S101 - checked by the caller
        h.flows.append(u)
        h.readings.append(y)
        if self.door:
            self.anchor = None
            return None
        t = self.tuning
        # a leak learned before the volume was validated explains the old model's errors, not a
        # leak: until a first horizon has fitted the volume, replay with the model's leak
        leak = self.w[3] if self.volume_known else self.leak_nominal
        best = h.fit(
            volume_l=self.model.volume_l,
            leak=leak,
            r=self.r_o2,
            gain_range=(t.gain_min, t.gain_max),
            lag_range=self.alpha_range,
        )
        self.w[2], self.w[5] = best.gain, best.lag
        if len(h.flows) >= self.anchor_steps:
            self._hand_back(h, best)
            self.anchor = None
            return None
        return h.blended_x_now()

    def _hand_back(self, h: PurgeHorizon, best: Fit) -> None:
        """The filter continues from the fit.

        Its delay, the states on that delayed axis, and a covariance from the fit's information
        (the states through their sensitivities to the parameters).
        """
        d = best.delay
        n = len(h.flows)
        # the leak is a rate per volume, Q_L / (60 V) with V = V_model / g: its nominal value,
        # scale, estimate and variance follow the learned volume (the leak in L/min is kept)
        ratio = best.gain / h.g0
        self.leak_nominal = self.base_leak_nominal * best.gain
        self.leak_scale = self.base_leak_scale * best.gain
        self.w[3] *= ratio
        for i in range(self.N):
            if i != 3:
                self.p[3][i] *= ratio
                self.p[i][3] = self.p[3][i]
        self.p[3][3] *= ratio * ratio
        if not self.volume_known:
            self.w[3] = self.leak_nominal  # the replay's leak, consistent with the fitted states
            self.volume_known = True
        self.delay = d
        self.history = deque(h.flows[max(0, n - d - 1) :], maxlen=d + 1)
        if len(self.history) < d + 1:  # a horizon shorter than the delay: pad with its start
            self.history.extendleft([h.flows[0]] * (d + 1 - len(self.history)))
        self.w[0] = best.x_delayed
        self.w[1] = best.s_now
        info, r = best.info, self.r_o2
        vg = h.gain_log_var * best.gain**2
        va = best.lag_log_var * best.lag**2
        m00 = info[0] / r + 1.0 / max(vg, 1e-12)
        m01 = info[1] / r
        m11 = info[2] / r + 1.0 / max(va, 1e-18)
        det = m00 * m11 - m01 * m01
        if det <= 0.0:
            return
        cov = ((m11 / det, -m01 / det), (-m01 / det, m00 / det))
        idx = (2, 5)
        jac = (best.jz, best.js)
        p = self.p
        for i in range(self.N):  # the fitted states carry no correlation with leak or door
            for j in (0, 1, 2, 5):
                p[i][j] = p[j][i] = 0.0
        for u in range(2):
            for v in range(2):
                p[idx[u]][idx[v]] = cov[u][v]
                p[u][idx[v]] = p[idx[v]][u] = sum(jac[u][k] * cov[k][v] for k in range(2))
        floor = 0.01 * self.r_o2
        for u in range(2):
            for v in range(2):
                p[u][v] = sum(jac[u][k] * cov[k][m] * jac[v][m] for k in range(2) for m in range(2))
            p[u][u] += floor

    def _forward(self) -> None:
        """Carry the delayed estimates through the transport delay with the flows applied since."""
        z, zc = self.w[0], self.wc[0]
        dt = self.dt
        k = self.w[2] / (60.0 * self.model.volume_l)
        exch = self.w[3] + self.w[4]
        bias = self.wc[2]
        # _step inlined for both gases: they share the decay exp(-(inflow + exchange) dt)
        o2_room, co2_room = exch * X_AIR_O2, exch * X_AIR_CO2
        first = True
        for u in self.history:
            if first:  # the oldest entry is the period the filter has just predicted
                first = False
                continue
            b = u.total * k + exch
            if b <= 1e-15:
                z += (u.o2_in * k + o2_room) * dt
                zc += (u.co2_in * k + bias + co2_room) * dt
                continue
            e = math.exp(-b * dt)
            v = (u.o2_in * k + o2_room) / b
            z = v + (z - v) * e
            v = (u.co2_in * k + bias + co2_room) / b
            zc = v + (zc - v) * e
        self.o2_now = z
        self.co2_now = zc if self.co2_started else math.nan

    # --------------------------------------------------------------------------- persistence
    def snapshot(self) -> dict[str, Any]:
        """The whole filter state, plain data (floats survive JSON exactly)."""
        return {
            "started": self.started,
            "co2_started": self.co2_started,
            "w": list(self.w),
            "p": [list(r) for r in self.p],
            "wc": list(self.wc),
            "pc": [list(r) for r in self.pc],
            "history": [[u.n2, u.air, u.o2, u.co2] for u in self.history],
            "actual": list(self.actual),
            "door": self.door,
            "quiet_s": self.quiet_s,
            "door_peak": self.door_peak,
            "purging": self.purging,
            "anchor": None if self.anchor is None else self.anchor.as_dict(),
            "delay": self.delay,
            "anchor_steps": self.anchor_steps,
            "volume_known": self.volume_known,
            "leak_scale": self.leak_scale,
            "leak_nominal": self.leak_nominal,
            "recent": list(self.recent),
            "readings": list(self.readings),
            "o2_now": self.o2_now,
            "co2_now": None if math.isnan(self.co2_now) else self.co2_now,
            "innovation": self.innovation,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot`."""
        self.started = bool(data["started"])
        self.co2_started = bool(data["co2_started"])
        self.w = [float(v) for v in data["w"]]
        self.p = [[float(v) for v in r] for r in data["p"]]
        self.wc = [float(v) for v in data["wc"]]
        self.pc = [[float(v) for v in r] for r in data["pc"]]
        self.delay = int(data.get("delay", self.delay))
        self.history = deque(
            (Flows(*(float(v) for v in u)) for u in data["history"]), maxlen=self.delay + 1
        )
        self.actual = [float(v) for v in data["actual"]]
        self.door = bool(data["door"])
        self.quiet_s = float(data["quiet_s"])
        self.door_peak = float(data.get("door_peak", 0.0))
        self.purging = bool(data["purging"])
        anchor = data.get("anchor")
        self.anchor = None if anchor is None else PurgeHorizon.from_dict(anchor)
        self.anchor_steps = int(data.get("anchor_steps", 0))
        self.volume_known = bool(data.get("volume_known", False))
        self.leak_scale = float(data.get("leak_scale", self.base_leak_scale))
        self.leak_nominal = float(data.get("leak_nominal", self.base_leak_nominal))
        self.recent.clear()
        self.recent.extend(float(v) for v in data.get("recent", []))
        self.readings.clear()
        self.readings.extend(float(v) for v in data.get("readings", []))
        self.o2_now = float(data["o2_now"])
        co2 = data["co2_now"]
        self.co2_now = math.nan if co2 is None else float(co2)
        self.innovation = float(data["innovation"])
