"""In-spec exposure clock and the statistics of each harvest's exposure window.

The exposure clock of a phase counts only time with O2 (or DO) inside the phase's band. The first
harvest's window opens when O2 first enters the band in the phase; each later harvest's window
opens at the previous harvest. An excursion is a stay outside the band, after the window opened,
of at least ``debounce_s``; it belongs to the window in which it started.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from common.harvest_stats import CELLS_KEYS

__all__ = ["CELLS_KEYS", "ExposureClock", "WindowStats", "cells_stats"]


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

    All fields are plain data so the run journal can snapshot and restore the clock exactly.

    Attributes:
        setpoint_pct: The phase's O2 (or DO-equivalent) set point, %.
        band_pct: Half-width of the in-spec band, % abs.
        debounce_s: Shortest out-of-band stay that counts as an excursion, s.
        exposure_s: In-spec time accumulated in the phase, s.
        window: Statistics of the open harvest window (``None`` before the first band entry).
        out_since_s: Start of the current out-of-band stay, if any (it belongs to ``window``).
    """

    setpoint_pct: float
    band_pct: float
    debounce_s: float = 10.0
    exposure_s: float = 0.0
    window: WindowStats | None = None
    out_since_s: float | None = None

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
        elif self.window is not None and self.out_since_s is None:
            self.out_since_s = now_s - dt_s
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

    def _count(self, until_s: float) -> None:
        """Count the stay out of band up to ``until_s`` on the open window, if long enough."""
        if self.out_since_s is None or self.window is None:
            return
        length = until_s - self.out_since_s
        if length >= self.debounce_s:
            self.window.excursions += 1
            self.window.excursion_s += length

    def _close_excursion(self, back_in_s: float) -> None:
        self._count(back_in_s)
        self.out_since_s = None

    def cut(self, now_s: float) -> dict[str, Any]:
        """Close the current window at a harvest and open the next; return the closed one's stats.

        An excursion still in progress is counted on the window it started in; its remainder
        belongs to the new window.
        """
        self._count(now_s)
        if self.out_since_s is not None:
            self.out_since_s = now_s
        closed = self.window if self.window is not None else WindowStats(opened_s=now_s)
        self.window = WindowStats(opened_s=now_s)
        return {"opened_s": closed.opened_s, **closed.summary()}

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state for the run journal."""
        return asdict(self)

    @classmethod
    def restore(cls, data: dict[str, Any]) -> ExposureClock:
        """Rebuild a clock from :meth:`snapshot`."""
        window = data.get("window")
        return cls(
            setpoint_pct=data["setpoint_pct"],
            band_pct=data["band_pct"],
            debounce_s=data["debounce_s"],
            exposure_s=data["exposure_s"],
            window=WindowStats(**window) if window else None,
            out_since_s=data.get("out_since_s"),
        )


def cells_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """A window's :meth:`ExposureClock.cut` statistics under their cells-side names.

    ``cells_in_band_s`` is the in-band fraction times the window, s; mean and dose error are of
    the estimated pericellular O2 (%-equivalent, %·h).
    """
    window = float(stats["window_s"])
    return {
        "cells_window_s": window,
        "cells_in_band_s": float(stats["in_band_frac"]) * window if window > 0 else 0.0,
        "cells_o2_mean_pct": stats["o2_mean_pct"],
        "cells_dose_error_pct_h": stats["dose_error_pct_h"],
        "cells_excursions": stats["excursions"],
        "cells_excursion_s": stats["excursion_s"],
    }
