"""What the alarm conditions need to remember between cycles.

:class:`SettleTracker` knows which variables have reached their band since the last set-point
change (before that, a difference is the planned approach, not a deviation). :class:`PurgeWatch`
knows when the current down-purge started and where O2 should be by now. Both change only through
their ``update`` / ``reset`` methods, called by the cycle in a fixed order.
"""

from __future__ import annotations

from controller.core.loops import LoopMode
from controller.core.process import ProcessModel, purge_expectation_pct
from controller.core.recipe import Phase
from controller.core.recipe_engine import Measured

VARIABLES = ("o2", "co2", "temp")


class SettleTracker:
    """Per variable (``o2``, ``co2``, ``temp``): in band at least once since the last change."""

    def __init__(self) -> None:
        self.reached: dict[str, bool] = dict.fromkeys(VARIABLES, False)

    def reset(self) -> None:
        """A set point moved (phase change or operator override): approaches start again."""
        self.reached = dict.fromkeys(VARIABLES, False)

    def update(self, phase: Phase | None, measured: Measured) -> None:
        """Mark every variable whose trusted value is inside its band now."""
        if phase is None:
            return
        for key, value, target, band in (
            ("o2", measured.o2_pct, phase.o2_pct, phase.o2_band_pct),
            ("co2", measured.co2_pct, phase.co2_pct, phase.co2_band_pct),
            ("temp", measured.temp_c, phase.temp_c, phase.temp_band_c),
        ):
            if value is not None and target is not None and abs(value - target) <= band:
                self.reached[key] = True


class PurgeWatch:
    """Tracks a down-purge to tell a failing N2 supply from a slow chamber.

    Args:
        model: The vessel's process model.
        dead_time_s: The O2 loop's dead time, s (the purge shows at the sensor only after it).
        check_after_s: Purge time (after the dead time) before an expectation is given, s.
    """

    def __init__(self, model: ProcessModel, dead_time_s: float, check_after_s: float) -> None:
        self.model = model
        self.dead_time_s = dead_time_s
        self.check_after_s = check_after_s
        self.started: tuple[float, float] | None = None
        """(run time s, O2 %) when the current purge started; None outside a purge."""

    def update(self, t_s: float, mode: LoopMode, o2_pct: float | None) -> float | None:
        """Record this cycle; return where O2 should be now (%), or None when there is no check."""
        if mode is not LoopMode.PURGE_DOWN or o2_pct is None:
            self.started = None
            return None
        if self.started is None:
            self.started = (t_s, o2_pct)
        t0, x0 = self.started
        elapsed = t_s - t0 - self.dead_time_s
        if elapsed < self.check_after_s:
            return None
        return purge_expectation_pct(self.model, x0, elapsed)
