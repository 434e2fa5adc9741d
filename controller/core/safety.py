"""Interlocks and alarm conditions of one reactor, evaluated every cycle after the loops.

Interlocks override what the loops asked for, independently of them:

* O2 reading bad or stale: the O2 loop holds its feed-forward (``HOLD_SAFE``); after
  ``o2_safe_hold_s`` the interlock closes N2 and air.
* O2 below the phase's floor: N2 closed.
* Temperature above the hard ceiling, or temperature untrusted: heater off.

Alarm conditions follow docs/control.md T12 and ISA-18.2 practice (delay, deadband); the
limits are site configuration (:class:`SafetyLimits`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from controller.core.alarms import Alarm, AlarmSet, Priority
from controller.core.loops import LoopMode
from controller.core.reactor import Actuation
from controller.core.recipe import Phase
from controller.core.recipe_engine import Event


class SafetyLimits(BaseModel):
    """Site limits for interlocks and alarms of one reactor (all optional).

    Attributes:
        o2_safe_hold_s: How long N2 stays at its feed-forward on an untrusted O2 reading, s.
        o2_floor_frac_of_sp: Default O2 floor as a fraction of the set point (0-1).
        o2_deviation_pct / o2_deviation_delay_s: O2 deviation alarm limit (% abs) and delay (s).
        co2_deviation_pct / temp_deviation_c: CO2 (% abs) and temperature (K) deviation limits.
        deviation_delay_s: Delay of the CO2 and temperature deviation alarms, s.
        deadband_frac: Clear at this fraction of the limit (0-1).
        temp_ceiling_c: Hard temperature ceiling: heater off above it, degC.
        o2_disagree_pct: Two O2 sensors disagreeing by more than this alarm, % abs.
        mfc_tolerance_lpm: An MFC further than this from its set point is not following, L/min.
        harvest_overdue_s: A released harvest unconfirmed after this is overdue, s.
        supply_check_s: Purge time after which O2 must have fallen as the model predicts, s.
        cycle_late_ms: A cycle whose outputs are written later than this after its tick is
            late, ms (controller/service/timing.py).
        cycle_late_count: The ``cycle_late`` alarm's condition: at least this many late or
            missed cycles among the last 60.
        cycle_late_delay_s: Delay of the ``cycle_late`` alarm, s.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    o2_safe_hold_s: float = Field(default=300.0, ge=0, le=3600)
    o2_floor_frac_of_sp: float = Field(default=0.5, ge=0, le=1)
    o2_deviation_pct: float = Field(default=1.0, gt=0, le=20)
    o2_deviation_delay_s: float = Field(default=300.0, ge=0, le=3600)
    co2_deviation_pct: float = Field(default=1.0, gt=0, le=20)
    temp_deviation_c: float = Field(default=1.0, gt=0, le=20)
    deviation_delay_s: float = Field(default=300.0, ge=0, le=3600)
    deadband_frac: float = Field(default=0.8, gt=0, le=1)
    temp_ceiling_c: float = Field(default=39.0, ge=20, le=60)
    o2_disagree_pct: float = Field(default=0.5, gt=0, le=20)
    mfc_tolerance_lpm: float = Field(default=0.2, gt=0, le=100)
    harvest_overdue_s: float = Field(default=1800.0, gt=0, le=86400)
    supply_check_s: float = Field(default=120.0, gt=0, le=3600)
    cycle_late_ms: float = Field(default=250.0, gt=0, le=60_000)
    cycle_late_count: int = Field(default=5, ge=1, le=60)
    cycle_late_delay_s: float = Field(default=10.0, ge=0, le=3600)


@dataclass(slots=True)
class CycleView:
    """What safety needs to know about this cycle (``None`` = untrusted or absent)."""

    now_s: float
    phase: Phase | None
    o2_pct: float | None
    co2_pct: float | None
    temp_c: float | None
    o2_mode: LoopMode
    o2_settled: bool
    co2_settled: bool = True
    temp_settled: bool = True
    o2_secondary_pct: float | None = None
    o2_quality_reason: str = ""
    n2_set_lpm: float = 0.0
    n2_actual_lpm: float | None = None
    purge_expected_pct: float | None = None
    pending_harvests: dict[str, float] = field(default_factory=dict)
    data_gap_s: float = 0.0
    cylinder_shortfall: str | None = None
    """Why a configured gas cylinder runs out before the run ends (None: none does)."""
    cylinders_forecast: bool = False
    """True when cylinders are configured and a forecast has been made."""
    late_cycles: int = 0
    """Late or missed cycles among the last 60 (controller/service/timing.py)."""
    o2_floor_armed: bool = True
    """False while O2 rises to a raised set point's floor (set by :meth:`Interlocks.apply`)."""
    calibration_due: str | None = None
    """Sensors past the site's calibration interval, in words ("" none; None: no interval)."""


def build_alarms(limits: SafetyLimits) -> AlarmSet:
    """The alarm set of a reactor, with delays from ``limits``."""
    alarms = AlarmSet()
    for name, priority, delay in (
        ("o2_deviation", Priority.HIGH, limits.o2_deviation_delay_s),
        ("co2_deviation", Priority.MEDIUM, limits.deviation_delay_s),
        ("temp_deviation", Priority.HIGH, limits.deviation_delay_s),
        ("o2_sensor", Priority.HIGH, 0.0),
        ("co2_sensor", Priority.MEDIUM, 0.0),
        ("temp_sensor", Priority.HIGH, 0.0),
        ("o2_disagree", Priority.MEDIUM, 60.0),
        ("gas_supply", Priority.CRITICAL, 0.0),
        ("gas_cylinder", Priority.HIGH, 0.0),
        ("calibration_due", Priority.LOW, 0.0),
        ("mfc_not_following", Priority.MEDIUM, 30.0),
        ("o2_below_floor", Priority.CRITICAL, 0.0),
        ("temp_ceiling", Priority.CRITICAL, 0.0),
        ("harvest_due", Priority.MEDIUM, 0.0),
        ("harvest_overdue", Priority.HIGH, 0.0),
        ("data_gap", Priority.MEDIUM, 0.0),
        ("cycle_late", Priority.MEDIUM, limits.cycle_late_delay_s),
    ):
        alarms.add(Alarm(name, priority, delay))
    return alarms


def o2_floor_pct(phase: Phase | None, limits: SafetyLimits) -> float | None:
    """The O2 floor of a gas-O2 phase: below it N2 closes (``None`` when not applicable)."""
    if phase is None or phase.o2_pct is None or phase.o2_basis != "gas":
        return None
    return phase.o2_pct * limits.o2_floor_frac_of_sp


@dataclass(slots=True)
class Interlocks:
    """Interlock state of one reactor across cycles.

    The O2 floor guards against O2 *falling* below half its set point. When the set point is
    raised (a reoxygenation phase, an operator's new set point) O2 starts below the new floor on
    purpose: the floor is then disarmed until O2 has risen to it, so a planned rise raises no
    critical alarm; at start-up (no previous set point) it is armed at once.
    """

    limits: SafetyLimits
    o2_untrusted_since_s: float | None = None
    tripped: set[str] = field(default_factory=set)
    o2_floor_armed: bool = True
    """False from a set-point rise until O2 reaches the new floor."""
    _o2_sp_pct: float | None = None

    def _arm_floor(self, view: CycleView, floor: float | None) -> None:
        """Disarm the floor on a set-point rise, re-arm it once O2 is at or above it."""
        sp = view.phase.o2_pct if view.phase is not None else None
        if sp != self._o2_sp_pct:
            if sp is not None and self._o2_sp_pct is not None and sp > self._o2_sp_pct:
                self.o2_floor_armed = False
            self._o2_sp_pct = sp
        if floor is None or (view.o2_pct is not None and view.o2_pct >= floor):
            self.o2_floor_armed = True
        view.o2_floor_armed = self.o2_floor_armed

    def apply(self, view: CycleView, act: Actuation) -> tuple[Actuation, list[Event]]:
        """Override ``act`` where an interlock holds; return the result and trip/reset events.

        Also sets ``view.o2_floor_armed`` for :func:`alarm_conditions`.
        """
        lim, now = self.limits, view.now_s
        active: set[str] = set()
        if view.phase is not None and view.phase.o2_pct is not None and view.o2_pct is None:
            if self.o2_untrusted_since_s is None:
                self.o2_untrusted_since_s = now
            if now - self.o2_untrusted_since_s >= lim.o2_safe_hold_s:
                active.add("o2_untrusted_close_n2")
        else:
            self.o2_untrusted_since_s = None
        floor = o2_floor_pct(view.phase, lim)
        self._arm_floor(view, floor)
        if (
            floor is not None
            and self.o2_floor_armed
            and view.o2_pct is not None
            and view.o2_pct < floor
        ):
            active.add("o2_below_floor")
        if view.temp_c is None or view.temp_c > lim.temp_ceiling_c:
            active.add("temp_ceiling")
        if "o2_untrusted_close_n2" in active:
            act = dataclasses.replace(act, n2_lpm=0.0, air_lpm=0.0, o2_lpm=0.0)
        if "o2_below_floor" in active:
            act = dataclasses.replace(act, n2_lpm=0.0)
        if "temp_ceiling" in active:
            act = dataclasses.replace(act, heater_w=0.0)
        events = [
            Event(now, "interlock", {"interlock": n, "state": "tripped"})
            for n in sorted(active - self.tripped)
        ]
        events += [
            Event(now, "interlock", {"interlock": n, "state": "reset"})
            for n in sorted(self.tripped - active)
        ]
        self.tripped = active
        return act, events


def alarm_conditions(
    view: CycleView, limits: SafetyLimits, alarms: AlarmSet
) -> dict[str, tuple[bool | None, str]]:
    """This cycle's condition and message for every alarm of :func:`build_alarms`."""
    phase = view.phase
    conds: dict[str, tuple[bool | None, str]] = {}

    def deviation(
        name: str, value: float | None, target: float | None, limit: float, applies: bool, unit: str
    ) -> None:
        if target is None or value is None or not applies:
            conds[name] = (None, "")
            return
        error = abs(value - target)
        was_active = alarms.alarms[name].active
        threshold = limit * limits.deadband_frac if was_active else limit
        conds[name] = (error > threshold, f"{value:.2f} {unit} vs set point {target:.2f} {unit}")

    gas_o2 = phase is not None and phase.o2_basis == "gas"
    deviation(
        "o2_deviation",
        view.o2_pct,
        phase.o2_pct if phase and gas_o2 else None,
        limits.o2_deviation_pct,
        view.o2_settled,
        "%",
    )
    deviation(
        "co2_deviation",
        view.co2_pct,
        phase.co2_pct if phase else None,
        limits.co2_deviation_pct,
        view.co2_settled,
        "%",
    )
    deviation(
        "temp_deviation",
        view.temp_c,
        phase.temp_c if phase else None,
        limits.temp_deviation_c,
        view.temp_settled,
        "degC",
    )
    controlled = phase is not None
    conds["o2_sensor"] = (
        view.o2_pct is None if controlled else None,
        f"O2 reading not trusted: {view.o2_quality_reason}",
    )
    conds["co2_sensor"] = (
        view.co2_pct is None if phase and phase.co2_pct is not None else None,
        "CO2 reading not trusted",
    )
    conds["temp_sensor"] = (
        view.temp_c is None if controlled else None,
        "temperature reading not trusted",
    )
    if view.o2_pct is not None and view.o2_secondary_pct is not None:
        gap = abs(view.o2_pct - view.o2_secondary_pct)
        conds["o2_disagree"] = (
            gap > limits.o2_disagree_pct,
            f"O2 sensors differ by {gap:.2f} % abs",
        )
    else:
        conds["o2_disagree"] = (None, "")
    if view.purge_expected_pct is not None and view.o2_pct is not None:
        lag = view.o2_pct - view.purge_expected_pct
        conds["gas_supply"] = (
            lag > 2.0,
            f"N2 flowing but O2 at {view.o2_pct:.2f} % where the "
            f"model expects {view.purge_expected_pct:.2f} %",
        )
    else:
        conds["gas_supply"] = (False if view.o2_mode is LoopMode.PURGE_DOWN else None, "")
    conds["gas_cylinder"] = (
        (view.cylinder_shortfall is not None) if view.cylinders_forecast else None,
        view.cylinder_shortfall or "",
    )
    conds["calibration_due"] = (
        None if view.calibration_due is None else bool(view.calibration_due),
        f"calibration due: {view.calibration_due}",
    )
    if view.n2_actual_lpm is not None:
        off = abs(view.n2_actual_lpm - view.n2_set_lpm)
        conds["mfc_not_following"] = (
            off > limits.mfc_tolerance_lpm,
            f"N2 MFC at {view.n2_actual_lpm:.2f} L/min, set {view.n2_set_lpm:.2f}",
        )
    else:
        conds["mfc_not_following"] = (None, "")
    floor = o2_floor_pct(phase, limits)
    below = floor is not None and view.o2_pct is not None and view.o2_pct < floor
    conds["o2_below_floor"] = (
        below and view.o2_floor_armed if floor is not None else None,
        f"O2 below the floor {floor} %: N2 closed",
    )
    conds["temp_ceiling"] = (
        view.temp_c is not None and view.temp_c > limits.temp_ceiling_c,
        f"temperature above {limits.temp_ceiling_c} degC: heater off",
    )
    pending = view.pending_harvests
    conds["harvest_due"] = (bool(pending), "harvest due: " + ", ".join(sorted(pending)))
    overdue = sorted(n for n, t in pending.items() if view.now_s - t > limits.harvest_overdue_s)
    conds["harvest_overdue"] = (bool(overdue), "harvest overdue: " + ", ".join(overdue))
    conds["data_gap"] = (view.data_gap_s > 0, f"no control for {view.data_gap_s:.0f} s")
    # deadband: once active, it returns to normal only after a window without a late cycle
    late_floor = 1 if alarms.alarms["cycle_late"].active else limits.cycle_late_count
    conds["cycle_late"] = (
        view.late_cycles >= late_floor,
        f"{view.late_cycles} of the last 60 cycles late (outputs more than "
        f"{limits.cycle_late_ms:g} ms after their tick) or missed",
    )
    return conds
