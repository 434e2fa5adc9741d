"""In-spec exposure clock and the statistics of each harvest's exposure window.

The exposure clock of a phase counts only time with O2 (or DO) inside the phase's band. The first
harvest's window opens when O2 first enters the band in the phase; each later harvest's window
opens at the previous harvest. An excursion is a stay outside the band, after the window opened,
of at least ``debounce_s``; it belongs to the window in which it started.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class WindowStats:
    """Running statistics of one exposure window (all times s, O2 in %)."""

    opened_s: float
    elapsed_s: float = 0.0
    in_band_s: float = 0.0
    sum_o2_pct_s: float = 0.0
    abs_error_pct_s: float = 0.0
    excursions: int = 0
    excursion_s: float = 0.0

    def summary(self) -> dict[str, float | int]:
        """Mean O2, in-band fraction, excursion count and dose error (%·h) of the window."""
        span = self.elapsed_s
        return {
            "window_s": span,
            "o2_mean_pct": self.sum_o2_pct_s / span if span > 0 else float("nan"),
            "in_band_frac": self.in_band_s / span if span > 0 else float("nan"),
            "excursions": self.excursions,
            "excursion_s": self.excursion_s,
            "dose_error_pct_h": self.abs_error_pct_s / 3600.0,
        }


@dataclass(slots=True)
class ExposureClock:
    """Exposure of one phase: band membership per sample, excursions and harvest windows.

    Attributes:
        setpoint_pct: The phase's O2 (or DO-equivalent) set point, %.
        band_pct: Half-width of the in-spec band, % abs.
        debounce_s: Shortest out-of-band stay that counts as an excursion, s.
        exposure_s: In-spec time accumulated in the phase, s.
    """

    setpoint_pct: float
    band_pct: float
    debounce_s: float = 10.0
    exposure_s: float = 0.0
    window: WindowStats | None = None
    _out_since_s: float | None = None
    _out_window: WindowStats | None = None
    excursion_log: list[dict[str, float]] = field(default_factory=list)

    def in_band(self, value_pct: float | None) -> bool:
        """True when ``value_pct`` is trusted and within the band."""
        return value_pct is not None and abs(value_pct - self.setpoint_pct) <= self.band_pct + 1e-9

    def sample(self, now_s: float, dt_s: float, value_pct: float | None) -> bool:
        """Account one control period ending at ``now_s``; return whether it was in band.

        An untrusted value (``None``) counts as out of band: exposure is never credited on data
        that cannot be trusted.
        """
        inside = self.in_band(value_pct)
        if inside:
            self.exposure_s += dt_s
            if self.window is None:
                self.window = WindowStats(opened_s=now_s - dt_s)
            self._close_excursion(now_s - dt_s)
        elif self.window is not None and self._out_since_s is None:
            self._out_since_s = now_s - dt_s
            self._out_window = self.window
        w = self.window
        if w is not None:
            w.elapsed_s += dt_s
            if inside:
                w.in_band_s += dt_s
            if value_pct is not None:
                w.sum_o2_pct_s += value_pct * dt_s
                w.abs_error_pct_s += abs(value_pct - self.setpoint_pct) * dt_s
            else:
                w.sum_o2_pct_s += self.setpoint_pct * dt_s
        return inside

    def _close_excursion(self, back_in_s: float) -> None:
        if self._out_since_s is None:
            return
        length = back_in_s - self._out_since_s
        target = self._out_window
        if length >= self.debounce_s and target is not None:
            target.excursions += 1
            target.excursion_s += length
            self.excursion_log.append({"start_s": self._out_since_s, "end_s": back_in_s})
        self._out_since_s = None
        self._out_window = None

    def cut(self, now_s: float) -> dict[str, Any]:
        """Close the current window at a harvest and open the next; return the closed one's stats.

        An excursion still in progress is counted on the window it started in.
        """
        out_window = self._out_window
        if (
            self._out_since_s is not None
            and out_window is not None
            and now_s - self._out_since_s >= self.debounce_s
        ):
            out_window.excursions += 1
            out_window.excursion_s += now_s - self._out_since_s
            self.excursion_log.append({"start_s": self._out_since_s, "end_s": now_s})
            self._out_since_s = now_s
        closed = self.window if self.window is not None else WindowStats(opened_s=now_s)
        self.window = WindowStats(opened_s=now_s)
        if self._out_since_s is not None:
            self._out_window = self.window
        return {"opened_s": closed.opened_s, **closed.summary()}

    def state(self) -> dict[str, Any]:
        """Serializable state (for the run journal)."""
        return {
            "setpoint_pct": self.setpoint_pct,
            "band_pct": self.band_pct,
            "exposure_s": self.exposure_s,
            "window": asdict(self.window) if self.window else None,
        }
