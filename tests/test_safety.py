"""ISA-18.2 alarm state machine and interlocks (unit level; the service tests provoke them over
the wire)."""

from __future__ import annotations

from controller.core.alarms import Alarm, AlarmState, Priority
from controller.core.loops import LoopMode
from controller.core.reactor import Actuation
from controller.core.recipe import Phase
from controller.core.safety import (
    CycleView,
    Interlocks,
    SafetyLimits,
    alarm_conditions,
    build_alarms,
)


def _state(alarm: Alarm) -> AlarmState:
    """The alarm's state, read through a call so mypy does not narrow it between steps."""
    return alarm.state


PHASE = Phase(name="hold", o2_pct=2.0, co2_pct=5.0, temp_c=37.0, duration_h=1.0)
ACT = Actuation(n2_lpm=1.0, air_lpm=0.0, o2_lpm=0.0, co2_lpm=0.05, heater_w=100.0)


def test_alarm_lifecycle_with_delay() -> None:
    alarm = Alarm("x", Priority.HIGH, delay_s=10.0)
    assert alarm.update(0.0, True) is None
    assert alarm.update(9.0, True) is None
    event = alarm.update(10.0, True, "too high")
    assert event is not None
    assert _state(alarm) is AlarmState.UNACK
    assert event.detail["message"] == "too high"
    alarm.acknowledge(11.0)
    assert _state(alarm) is AlarmState.ACKED
    alarm.update(12.0, False)
    assert _state(alarm) is AlarmState.NORMAL


def test_alarm_returns_unacknowledged_then_ack_clears() -> None:
    alarm = Alarm("x", Priority.LOW)
    alarm.update(0.0, True)
    alarm.update(1.0, False)
    assert _state(alarm) is AlarmState.RTN_UNACK
    alarm.update(2.0, True)
    assert _state(alarm) is AlarmState.UNACK
    alarm.update(3.0, False)
    alarm.acknowledge(4.0)
    assert _state(alarm) is AlarmState.NORMAL


def test_alarm_shelve_expires_and_reannounces() -> None:
    alarm = Alarm("x", Priority.LOW)
    alarm.update(0.0, True)
    alarm.shelve(1.0, until_s=100.0)
    assert alarm.update(50.0, True) is None
    assert _state(alarm) is AlarmState.SHELVED
    event = alarm.update(100.0, True, "still")
    assert event is not None
    assert _state(alarm) is AlarmState.UNACK


def test_alarm_suppressed_when_not_applicable() -> None:
    alarm = Alarm("x", Priority.LOW)
    alarm.update(0.0, None)
    assert _state(alarm) is AlarmState.SUPPRESSED
    alarm.update(1.0, False)
    assert _state(alarm) is AlarmState.NORMAL


def _view(**kw: object) -> CycleView:
    base: dict[str, object] = {
        "now_s": 0.0,
        "phase": PHASE,
        "o2_pct": 2.0,
        "co2_pct": 5.0,
        "temp_c": 37.0,
        "o2_mode": LoopMode.TRACK,
        "o2_settled": True,
    }
    base.update(kw)
    return CycleView(**base)  # type: ignore[arg-type]


def test_untrusted_o2_holds_then_closes_n2() -> None:
    locks = Interlocks(SafetyLimits(o2_safe_hold_s=300.0))
    act, events = locks.apply(_view(now_s=0.0, o2_pct=None), ACT)
    assert act.n2_lpm == 1.0
    assert events == []
    act, events = locks.apply(_view(now_s=300.0, o2_pct=None), ACT)
    assert act.n2_lpm == 0.0
    assert [e.detail["interlock"] for e in events] == ["o2_untrusted_close_n2"]
    act, events = locks.apply(_view(now_s=301.0), ACT)
    assert act.n2_lpm == 1.0
    assert events[0].detail["state"] == "reset"


def test_o2_below_floor_closes_n2_and_temp_ceiling_cuts_heater() -> None:
    locks = Interlocks(SafetyLimits(temp_ceiling_c=39.0))
    act, _ = locks.apply(_view(o2_pct=0.9, temp_c=39.5), ACT)
    assert act.n2_lpm == 0.0
    assert act.heater_w == 0.0
    act, _ = locks.apply(_view(temp_c=None), ACT)
    assert act.heater_w == 0.0  # temperature unknown: heater off


def test_alarm_conditions_cover_t12() -> None:
    limits = SafetyLimits()
    alarms = build_alarms(limits)
    conds = alarm_conditions(
        _view(
            o2_pct=3.5,
            o2_secondary_pct=2.6,
            n2_actual_lpm=0.0,
            n2_set_lpm=1.0,
            pending_harvests={"H": -4000.0},
            data_gap_s=30.0,
        ),
        limits,
        alarms,
    )
    active = {name for name, (cond, _) in conds.items() if cond}
    assert {
        "o2_deviation",
        "o2_disagree",
        "mfc_not_following",
        "harvest_due",
        "harvest_overdue",
        "data_gap",
    } <= active
    assert set(conds) == set(alarms.alarms)
    quiet = alarm_conditions(_view(), limits, alarms)
    assert not any(cond for cond, _ in quiet.values())


def test_a_raised_set_point_disarms_the_o2_floor_until_o2_reaches_it() -> None:
    """Reoxygenation 2 % -> 18.6 %: O2 starts far below the new floor (9.3 %) on purpose — no
    interlock, no critical alarm — until it has risen to the floor; a fall below it after that
    trips both. A lower set point keeps the floor armed."""
    limits = SafetyLimits()
    locks, alarms = Interlocks(limits), build_alarms(limits)
    reox = Phase(name="reoxygenate", o2_pct=18.6, co2_pct=5.0, temp_c=37.0, duration_h=1.0)

    def step(phase: Phase, o2_pct: float, now_s: float) -> tuple[float, bool | None]:
        view = _view(phase=phase, o2_pct=o2_pct, now_s=now_s)
        act, _ = locks.apply(view, ACT)
        cond, _ = alarm_conditions(view, limits, alarms)["o2_below_floor"]
        return act.n2_lpm, cond

    assert step(PHASE, 2.0, 0.0) == (1.0, False)  # hold at 2 %: floor 1 %
    assert step(reox, 2.1, 1.0) == (1.0, False)  # raised: 2.1 < 9.3, but disarmed
    assert step(reox, 8.0, 2.0) == (1.0, False)
    assert not locks.tripped
    assert step(reox, 9.5, 3.0) == (1.0, False)  # reached the floor: armed
    assert step(reox, 9.0, 4.0) == (0.0, True)  # and now a fall below it trips
    assert locks.tripped == {"o2_below_floor"}
    assert step(PHASE, 0.9, 5.0) == (0.0, True)  # a lower set point: still armed (floor 1 %)
