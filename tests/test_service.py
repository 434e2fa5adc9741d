"""The control service over the real wire protocols (in-process, on a stepped clock): runs,
harvests, commands, and every alarm and interlock provoked by the simulators' fault injection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.service_kit import HOLD_5, Stack, stack

SHORT = (Path(__file__).resolve().parent.parent / "examples/recipes/short-demo.toml").read_text()


async def _to_setpoint(st: Stack, minutes: int = 20) -> None:
    await st.cycles(60 * minutes)
    o2 = st.runner.snapshot.readings["o2"]["value"]
    assert o2 == pytest.approx(5.0, abs=0.3)


def _cmd(st: Stack, verb: str, user: str = "erik", **fields: Any) -> dict[str, Any]:
    processor = st.service.processor
    assert processor is not None
    run = st.runner.run
    assert run is not None
    body = {"verb": verb, "reactor": "ws1", "run_id": run.run_id, "user": user, **fields}
    return processor.handle(body).as_dict()


async def test_short_recipe_runs_to_completion_with_two_harvests(tmp_path: Path) -> None:
    async with stack(tmp_path, SHORT) as st:
        await st.cycles(600)
        due = st.journal_events("harvest_due")
        assert [h["name"] for h in due] == ["CM-2min"]
        reply = _cmd(
            st,
            "confirm_harvest",
            user="olga",
            harvest="CM-2min",
            volume_ml=12.5,
            container="T75-0042",
        )
        assert reply["ok"], reply
        await st.cycles(400)
        run = st.runner.run
        assert run is not None
        assert st.service.journal.run(run.run_id).status == "complete"  # type: ignore[union-attr]
        due = st.journal_events("harvest_due")
        assert [(h["name"], h["exposure_s"]) for h in due] == [
            ("CM-2min", 120.0),
            ("CM-5min", 300.0),
        ]
        phases = st.journal_events("phase_start")
        ends = st.journal_events("phase_end")
        assert [p["phase"] for p in phases] == ["hypoxic hold", "release"]
        assert ends[1]["t_s"] - ends[0]["t_s"] == pytest.approx(0.02 * 3600, abs=1.0)
        done = st.journal_events("harvest_done")
        assert {(d["harvest"], d["by"]) for d in done} == {("CM-2min", "olga"), ("CM-5min", "pump")}
        pump = st.journal_events("pump_start")[0]["t_s"], st.journal_events("pump_stop")[0]["t_s"]
        assert pump[1] - pump[0] == pytest.approx(30.0, abs=1.0)  # 10 mL at 20 mL/min
        assert st.link.setpoints_lpm["N2"] == 0.0  # outputs safe at the end
        assert st.service.audit.verify().ok


async def test_o2_sensor_silent_alarms_holds_feedforward_then_closes_n2(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5, limits={"o2_safe_hold_s": 60.0}) as st:
        await _to_setpoint(st)
        n2_before = st.link.setpoints_lpm["N2"]
        st.sim.sim("o2-luminox").faults.no_reply = True
        await st.cycles(5)
        assert st.alarm("o2_sensor") == "active_unacknowledged"
        assert st.link.setpoints_lpm["N2"] == pytest.approx(n2_before, abs=0.5)  # safe hold
        await st.cycles(60)
        assert st.link.setpoints_lpm["N2"] == 0.0  # bounded: then N2 closes
        assert [e["interlock"] for e in st.journal_events("interlock")] == ["o2_untrusted_close_n2"]
        st.sim.sim("o2-luminox").faults.clear()
        await st.cycles(10)
        assert st.alarm("o2_sensor") == "returned_unacknowledged"
        assert st.link.setpoints_lpm["N2"] > 0.0


async def test_garbled_o2_is_bad_never_a_number(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await st.cycles(30)
        st.sim.sim("o2-luminox").faults.garble = True
        await st.cycles(3)
        reading = st.runner.snapshot.readings["o2"]
        assert reading["quality"] == "bad"
        assert reading["value"] is None
        assert st.alarm("o2_sensor") == "active_unacknowledged"


async def test_o2_deviation_and_gas_supply_failure(tmp_path: Path) -> None:
    limits = {"o2_deviation_delay_s": 30.0, "supply_check_s": 60.0}
    async with stack(tmp_path, HOLD_5, limits=limits) as st:
        st.sim.sim("mfc-n2").faults.stuck = True  # valve dead: writes acknowledged, no flow
        await st.cycles(200)
        assert st.alarm("gas_supply") == "active_unacknowledged"
        assert st.journal_events("actuator_fault")  # the write-verify saw it too
        assert st.alarm("mfc_not_following") == "active_unacknowledged"
    async with stack(tmp_path / "b", HOLD_5, limits=limits) as st:
        await _to_setpoint(st)
        st.link.door_open = True  # a door left open: O2 climbs whatever N2 does
        await st.cycles(120)
        assert st.alarm("o2_deviation") == "active_unacknowledged"


async def test_o2_sensors_disagreeing(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5, secondary_o2=True) as st:
        await st.cycles(30)
        st.sim.sim("o2-luminox-b").faults.start_drift(0.05)  # 3 %/min away from the primary
        await st.cycles(100)
        assert st.alarm("o2_disagree") == "active_unacknowledged"


async def test_o2_below_floor_closes_n2(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await _to_setpoint(st)
        st.sim.sim("o2-luminox").faults.start_drift(-0.1)  # reads ever lower
        await st.cycles(40)
        assert st.alarm("o2_below_floor") == "active_unacknowledged"
        assert st.link.setpoints_lpm["N2"] == 0.0
        assert "o2_below_floor" in [e["interlock"] for e in st.journal_events("interlock")]


async def test_temperature_ceiling_and_bad_temperature_cut_the_heater(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await st.cycles(30)
        assert st.link.heater_source() > 0.0  # warming up
        st.sim.sim("temp-pt100").faults.start_drift(1.0)  # probe reads +1 K/s
        await st.cycles(25)
        assert st.alarm("temp_ceiling") == "active_unacknowledged"
        assert st.link.heater_source() == 0.0
        st.sim.sim("temp-pt100").faults.clear()
        st.sim.sim("temp-pt100").faults.no_reply = True
        await st.cycles(5)
        assert st.alarm("temp_sensor") == "active_unacknowledged"
        assert st.link.heater_source() == 0.0


async def test_co2_sensor_and_deviation(tmp_path: Path) -> None:
    limits = {"deviation_delay_s": 30.0, "co2_deviation_pct": 0.5}
    async with stack(tmp_path, HOLD_5, limits=limits) as st:
        await st.cycles(20)
        st.sim.sim("co2-gmp251").faults.exception_code = 4
        await st.cycles(3)
        assert st.alarm("co2_sensor") == "active_unacknowledged"
        st.sim.sim("co2-gmp251").faults.clear()
        await st.cycles(300)  # CO2 reaches its band: deviations count from now on
        assert st.alarm("co2_deviation") == "normal"
        st.link.door_open = True  # room air floods in faster than CO2 can follow
        await st.cycles(90)
        assert st.alarm("co2_deviation") == "active_unacknowledged"


async def test_temperature_deviation_after_warm_up(tmp_path: Path) -> None:
    limits = {"deviation_delay_s": 60.0, "temp_deviation_c": 1.0}
    async with stack(tmp_path, HOLD_5, limits=limits) as st:
        await st.cycles(600)  # warming from 21 degC: a difference, not yet a deviation
        assert st.alarm("temp_deviation") == "suppressed" or st.alarm("temp_deviation") == "normal"
        await st.cycles(3000)
        assert st.runner.snapshot.readings["temperature"]["value"] == pytest.approx(37.0, abs=0.3)
        st.link.door_open = True  # door left open: losses exceed the heater
        await st.cycles(400)
        assert st.alarm("temp_deviation") == "active_unacknowledged"
        assert st.runner.snapshot.actuation["heater_w"] == pytest.approx(400.0)


async def test_harvest_due_overdue_and_confirmation(tmp_path: Path) -> None:
    async with stack(tmp_path, SHORT, limits={"harvest_overdue_s": 60.0}) as st:
        await st.cycles(560)
        assert st.alarm("harvest_due") == "active_unacknowledged"
        await st.cycles(70)
        assert st.alarm("harvest_overdue") == "active_unacknowledged"
        assert _cmd(
            st, "confirm_harvest", user="olga", harvest="CM-2min", volume_ml=10, container="C1"
        )["ok"]
        await st.cycles(2)
        assert st.alarm("harvest_overdue") == "returned_unacknowledged"
        assert _cmd(st, "acknowledge", user="olga", alarm="harvest_overdue")["ok"]
        await st.cycles(1)
        assert st.alarm("harvest_overdue") == "normal"


async def test_watchdog_puts_actuators_in_safe_state(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await st.cycles(10)
        assert st.link.setpoints_lpm["N2"] > 0.0
        import asyncio

        dog = asyncio.create_task(st.runner.watchdog(stall_s=0.02))
        st.clock.advance(5.0)  # time passes, no cycle runs: the cycle has stalled
        await asyncio.sleep(0.1)
        dog.cancel()
        assert st.link.setpoints_lpm["N2"] == 0.0
        assert st.link.heater_source() == 0.0


async def test_shelved_alarm_stays_quiet_until_expiry(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await st.cycles(10)
        st.sim.sim("co2-sprintir").faults.no_reply = True  # secondary: no alarm of its own
        st.sim.sim("co2-gmp251").faults.no_reply = True
        await st.cycles(3)
        assert _cmd(
            st, "shelve", user="olga", alarm="co2_sensor", minutes=1, reason="probe being replaced"
        )["ok"]
        await st.cycles(2)
        assert st.alarm("co2_sensor") == "shelved"
        await st.cycles(65)
        assert st.alarm("co2_sensor") == "active_unacknowledged"


BAD_COMMANDS = [
    ({"run_id": "nope"}, "unknown run"),
    (
        {"verb": "set_setpoint", "variable": "o2_pct", "value": 30.0, "reason": "x"},
        "outside the site limits",
    ),
    ({"verb": "set_setpoint", "variable": "o2_pct", "value": 3.0}, "needs a reason"),
    (
        {"verb": "set_setpoint", "user": "olga", "variable": "o2_pct", "value": 3.0, "reason": "x"},
        "role 'operator' may not set_setpoint",
    ),
    ({"user": "mallory"}, "unknown user"),
    ({"verb": "launch"}, "unknown verb"),
    ({"verb": "set_setpoint", "variable": "o2_pct", "value": "low", "reason": "x"}, "valid number"),
    (
        {"verb": "set_setpoint", "variable": "o2_pct", "value": 0.05, "reason": "x"},
        "cannot be held",
    ),
]


@pytest.mark.parametrize(("patch", "why"), BAD_COMMANDS)
async def test_bad_commands_are_refused_and_audited(
    tmp_path: Path, patch: dict[str, Any], why: str
) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await st.cycles(2)
        run = st.runner.run
        assert run is not None
        body = {"verb": "hold", "reactor": "ws1", "run_id": run.run_id, "user": "erik", **patch}
        processor = st.service.processor
        assert processor is not None
        reply = processor.handle(body).as_dict()
        assert not reply["ok"]
        assert why in reply["message"]
        last = st.service.audit.records()[-1]
        assert last.outcome.startswith("refused")
        assert why in last.outcome
        assert st.service.audit.verify().ok


async def test_malformed_command_text_is_refused(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        processor = st.service.processor
        assert processor is not None
        assert "not JSON" in processor.handle(b"{verb: hold").message
        assert "at most" in processor.handle(b"{" + b" " * 9000 + b"}").message
        assert st.service.audit.records()[-1].outcome.startswith("refused")


async def test_setpoint_change_by_engineer_moves_the_loop(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD_5) as st:
        await _to_setpoint(st)
        reply = _cmd(st, "set_setpoint", variable="o2_pct", value=4.0, reason="protocol v2")
        assert reply["ok"], reply
        await st.cycles(600)
        assert st.runner.snapshot.readings["o2"]["value"] == pytest.approx(4.0, abs=0.2)
        change = st.journal_events("setpoint_changed")[0]
        assert (change["old"], change["new"], change["user"]) == (5.0, 4.0, "erik")
        record = st.service.audit.records()[-1]
        assert (record.action, record.old_value, record.new_value) == ("set_setpoint", "5.0", "4.0")


async def test_hold_and_restart(tmp_path: Path) -> None:
    async with stack(tmp_path, SHORT) as st:
        await st.cycles(300)
        assert _cmd(st, "hold", user="olga")["ok"]
        await st.cycles(400)  # held: no harvest is released
        assert st.journal_events("harvest_due") == []
        assert _cmd(st, "restart", user="olga")["ok"]
        await st.cycles(5)
        # a held phase keeps counting exposure (the cells stay hypoxic) but releases nothing;
        # on restart both harvests are due, each recording the exposure it really had
        due = st.journal_events("harvest_due")
        assert [h["name"] for h in due] == ["CM-2min", "CM-5min"]
        assert due[0]["exposure_s"] > 300.0
        assert [e["kind"] for e in st.journal_events("phase_held")] == ["phase_held"]


async def test_streaming_o2_sensor_going_silent_reads_stale_and_alarms(tmp_path: Path) -> None:
    """Stale (too old), not bad: a LuminOx in streaming mode stops streaming. Real time here,
    because a streaming sensor paces itself (one line a second)."""
    from controller.service.clock import ScaledClock
    from tests.service_kit import site_file

    site = site_file(tmp_path)
    text = site.read_text().replace(
        'line = "o2-uart"\nrole = "o2"', 'line = "o2-uart"\nrole = "o2"\nmode = "stream"'
    )
    site.write_text(text)
    clock = ScaledClock(1.0)
    async with stack(tmp_path, HOLD_5, site_path=site, clock=clock) as st:

        async def cycles(n: int) -> None:
            for _ in range(n):
                await clock.sleep_until(clock.monotonic() + 1.0)
                await st.runner.cycle([])

        await cycles(4)
        assert st.runner.snapshot.readings["o2"]["quality"] == "good"
        st.sim.sim("o2-luminox").faults.no_reply = True  # the stream stops
        await cycles(6)  # max_age_s is 3 s
        reading = st.runner.snapshot.readings["o2"]
        assert reading["quality"] == "stale"  # the last value is shown, marked stale
        assert st.alarm("o2_sensor") == "active_unacknowledged"
        assert "stale" in st.runner.alarms.alarms["o2_sensor"].message
        assert st.runner.controller.o2.mode.value == "hold_safe"  # control does not act on it


@pytest.mark.parametrize("policy", ["hold", "safe"])
async def test_restart_policy_hold_or_safe(tmp_path: Path, policy: str) -> None:
    """After a crash, `hold` keeps the targets but stops phase progress; `safe` also turns every
    output off until an operator restarts the phase."""
    from tests.service_kit import site_file

    site = site_file(tmp_path)
    site.write_text(site.read_text().replace('restart = "resume"', f'restart = "{policy}"'))
    async with stack(tmp_path, SHORT, site_path=site) as st:
        await st.cycles(200)
        run = st.runner.run
        assert run is not None
        run_id, clock = run.run_id, st.clock
    async with stack(tmp_path, "", site_path=site, clock=clock) as st:  # restarted, no recipe
        assert st.runner.run is not None
        assert st.runner.run.run_id == run_id
        await st.cycles(400)  # long enough that a running phase would release CM-2min
        engine = st.runner.engine
        assert engine is not None
        assert engine.state.value == "held"
        assert st.journal_events("harvest_due") == []
        if policy == "safe":
            assert st.link.setpoints_lpm["N2"] == 0.0
            assert st.link.setpoints_lpm.get("CO2", 0.0) == 0.0
        else:
            assert st.link.setpoints_lpm["N2"] > 0.0  # still holding its gas targets
        assert _cmd(st, "restart", user="olga")["ok"]
        # after "safe" the gas was off: O2 drifted up and must be purged down again first
        await st.cycles(900)
        assert "CM-2min" in [h["name"] for h in st.journal_events("harvest_due")]


async def test_a_failed_write_is_retried_so_an_interlock_holds(tmp_path: Path) -> None:
    """Review finding: a write that failed once was never retried while the request stayed the
    same, so the O2 floor interlock could leave N2 flowing."""
    async with stack(tmp_path, HOLD_5) as st:
        await _to_setpoint(st)
        assert st.link.setpoints_lpm["N2"] > 0.0
        mfc = st.sim.sim("mfc-n2")
        mfc.faults.no_reply = True  # the next writes to the N2 MFC are lost
        st.sim.sim("o2-luminox").faults.start_drift(-0.2)  # O2 reads ever lower: floor trips
        await st.cycles(20)
        assert "o2_below_floor" in [e["interlock"] for e in st.journal_events("interlock")]
        assert st.journal_events("actuator_fault")
        mfc.faults.no_reply = False
        await st.cycles(20)  # the hub probes a silent unit again within at most 15 s
        assert st.link.setpoints_lpm["N2"] == 0.0  # rewritten once the MFC answers again


async def test_abort_is_final_even_when_a_hold_arrives_in_the_same_cycle(tmp_path: Path) -> None:
    async with stack(tmp_path, SHORT) as st:
        await st.cycles(30)
        assert _cmd(st, "abort", reason="contamination")["ok"]
        assert _cmd(st, "hold", user="olga")["ok"]  # accepted: the abort is not applied yet
        await st.cycles(2)
        engine = st.runner.engine
        assert engine is not None
        assert engine.state.value == "aborted"
        run = st.runner.run
        assert run is not None
        assert st.service.journal.run(run.run_id).status == "aborted"  # type: ignore[union-attr]
        last = st.service.audit.records()[-1]
        assert (last.user, last.action) == ("olga", "hold")
        assert last.outcome.startswith("refused: not applied")


async def test_a_duplicate_harvest_confirmation_changes_nothing(tmp_path: Path) -> None:
    async with stack(tmp_path, SHORT) as st:
        await st.cycles(600)
        for _ in range(2):  # a double submit, both accepted before either is applied
            assert _cmd(
                st, "confirm_harvest", user="olga", harvest="CM-2min", volume_ml=10, container="C1"
            )["ok"]
        await st.cycles(5)
        assert st.runner.finished is False  # the control task is alive
        done = [d for d in st.journal_events("harvest_done") if d["harvest"] == "CM-2min"]
        assert len(done) == 1
