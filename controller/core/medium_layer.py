"""Medium-layer solver: 1-D diffusion-reaction through a static medium layer (docs/physics.md §B7).

    dC/dt = D d2C/dz2,   0 < z < L  (z from the medium surface down to the cells)
    C(0, t) = C_top(t)                              (equilibrium with the gas above the medium)
    D dC/dz (L, t) = -J_max C / (K_m + C)           (Michaelis-Menten uptake by the cell layer)

Method of lines on ``nodes`` equal intervals (the bottom node carries half a cell, so the flux
boundary is second-order and the discrete steady state is the exact linear profile), Crank-Nicolson
in time for diffusion with the uptake term implicit and linearised about the previous value
(C_new / (K_m + C_old)); a tridiagonal (Thomas) solve per step. Plain Python lists: with a handful
of nodes this is faster than numpy's per-call overhead. Concentrations uM, lengths m, times s.

Its own module, free of pydantic, so that it compiles with mypyc (buildtools/compile_core.py);
:mod:`controller.core.pericellular` builds the estimator on it and re-exports it.
"""

from __future__ import annotations

import math


class MediumLayer:
    """The O2 profile of one medium layer over a cell monolayer.

    Args:
        depth_m: Medium depth L, m.
        nodes: Number of intervals (nodes + 1 grid points; point 0 is the surface).
        initial_um: Uniform starting concentration, uM (see :meth:`settle` for a steady start).
    """

    def __init__(self, depth_m: float, nodes: int, initial_um: float) -> None:
        if nodes < 2:
            raise ValueError("nodes must be >= 2")
        self.depth_m = depth_m
        self.nodes = nodes
        self.dz = depth_m / nodes
        self.c = [initial_um] * (nodes + 1)
        self._cp = [0.0] * (nodes + 1)
        self._dp = [0.0] * (nodes + 1)

    @property
    def cell_um(self) -> float:
        """O2 at the cell layer (bottom node), uM."""
        return self.c[-1]

    def step(
        self, dt_s: float, top_um: float, diffusivity_m2_s: float, jmax_um_m_s: float, km_um: float
    ) -> float:
        """Advance ``dt_s`` with the surface held at ``top_um``; return the cell-layer O2, uM.

        Args:
            dt_s: Step, s (Crank-Nicolson: stable for any step; accurate while D dt/dz^2 <~ 1).
            top_um: Surface concentration over the step, uM.
            diffusivity_m2_s: O2 diffusivity in the medium, m^2/s.
            jmax_um_m_s: Maximum uptake flux of the cell layer, uM m/s (= mmol/m^2/s).
            km_um: Michaelis constant, uM.
        """
        c, cp, dp, n = self.c, self._cp, self._dp, self.nodes
        r = diffusivity_m2_s * dt_s / (self.dz * self.dz)
        h = 0.5 * r
        c_old_top = c[0]
        c[0] = top_um
        # interior rows: -h c[i-1] + (1 + 2h) c[i] - h c[i+1] = rhs
        diag = 1.0 + 2.0 * h
        rhs = c[1] + h * (c_old_top - 2.0 * c[1] + c[2]) + h * top_um
        cp[1] = -h / diag
        dp[1] = rhs / diag
        for i in range(2, n):
            denom = diag + h * cp[i - 1]
            rhs = c[i] + h * (c[i - 1] - 2.0 * c[i] + c[i + 1])
            cp[i] = -h / denom
            dp[i] = (rhs + h * dp[i - 1]) / denom
        # bottom row (half cell): -2h c[n-1] + (1 + 2h + k dt) c[n] = c[n] + 2h (c[n-1] - c[n])
        c_b = c[n]
        k_dt = 2.0 * jmax_um_m_s / (self.dz * (km_um + max(c_b, 0.0))) * dt_s
        rhs = c_b + r * (c[n - 1] - c_b)
        denom = 1.0 + r + k_dt + r * cp[n - 1]
        c[n] = (rhs + r * dp[n - 1]) / denom
        for i in range(n - 1, 0, -1):
            c[i] = dp[i] - cp[i] * c[i + 1]
        return c[n]

    def settle(
        self, top_um: float, jmax_um_m_s: float, km_um: float, diffusivity_m2_s: float
    ) -> None:
        """Set the exact steady profile for a surface held at ``top_um``."""
        cell = steady_cell_um(top_um, jmax_um_m_s * self.depth_m / diffusivity_m2_s, km_um)
        for i in range(self.nodes + 1):
            self.c[i] = top_um + (cell - top_um) * i / self.nodes


def steady_cell_um(top_um: float, drop_um: float, km_um: float) -> float:
    """Analytical steady cell-layer O2: C_p = C_top - a C_p/(K_m + C_p), a = J_max L / D.

    The root of C_p^2 + (K_m + a - C_top) C_p - K_m C_top = 0 that is >= 0.
    """
    b = km_um + drop_um - top_um
    return (-b + math.sqrt(b * b + 4.0 * top_um * km_um)) / 2.0


def slowest_time_constant_s(depth_m: float, diffusivity_m2_s: float) -> float:
    """Slowest diffusion mode of the layer (surface fixed, bottom sealed): 4 L^2 / (pi^2 D)."""
    return 4.0 * depth_m * depth_m / (math.pi * math.pi * diffusivity_m2_s)


def step_response_cell(
    t_s: float, depth_m: float, diffusivity_m2_s: float, terms: int = 400
) -> float:
    """Share of a surface step still missing at the sealed bottom at ``t_s`` (series solution).

    u(L, t) = sum_n 4 (-1)^n / ((2n + 1) pi) exp(-((2n + 1) pi / 2L)^2 D t); with zero-order uptake
    the uptake profile is unchanged by the step, so the cell layer follows C1 - a + (C0 - C1) u.
    """
    total = 0.0
    for k in range(terms):
        m = 2 * k + 1
        lam = m * math.pi / (2.0 * depth_m)
        total += 4.0 * (-1) ** k / (m * math.pi) * math.exp(-lam * lam * diffusivity_m2_s * t_s)
    return total
