"""Safe on a real site's first day: start-up gating, resume, simulated time, bounded events.

Real stacks: the example site's instruments served over their wire protocols by
simulators/site_sim.py (or deliberately not served), the service built as `hypoxia run` builds it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from common.config_errors import ConfigError
from controller.service.app import build_service
from controller.service.audit import AuditTrail
from controller.service.clock import SteppedClock
from controller.service.recipe_source import RecipeSource
from controller.service.site import load_site
from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim, AlicatState
from simulators.devices.vaisala import GmpSim
from simulators.site_sim import serve_site
from simulators.vessel import load_vessel
from tests.service_kit import ROOT, T0, Stack, recipe_file, site_file, stack

HOLD = """
name = "hold 5 %"
[[phases]]
name = "hold"
o2_pct = 5.0
co2_pct = 5.0
temp_c = 37.0
until = "time"
duration_h = 10.0
"""
OTHER = HOLD.replace('name = "hold 5 %"', 'name = "hold 5 %, another recipe"')


async def test_a_new_run_refuses_to_start_on_instruments_that_do_not_answer(
    tmp_path: Path,
) -> None:
    site = load_site(site_file(tmp_path))  # nothing serves its instruments
    recipe = RecipeSource.from_file(recipe_file(tmp_path, HOLD))
    with pytest.raises(ConfigError) as caught:
        await build_service(
            site,
            ["ws1"],
            recipe,
            clock=SteppedClock(T0),
            open_wait_s=0.2,
            ready_patience_s=0.5,
        )
    message = str(caught.value)
    assert "nothing was started" in message
    for reading, device in (
        ("o2", "o2-luminox"),
        ("co2", "co2-gmp251"),
        ("temperature", "temp-pt100"),
        ("n2_mixer_flow", "mfc-n2"),
        ("co2_mixer_flow", "mfc-co2"),
    ):
        assert f"reactor ws1: {reading} ({device}): " in message, message
    assert "--force" in message
    journal_path = site.state_dir / "journal.sqlite"
    runs = sqlite3.connect(journal_path).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert runs == 0  # nothing moved, nothing journaled

    forced = await build_service(
        site,
        ["ws1"],
        recipe,
        clock=SteppedClock(T0),
        open_wait_s=0.2,
        ready_patience_s=0.5,
        force=True,
    )
    try:
        records = AuditTrail.open(site.state_dir / "audit.sqlite").records()
        started = [r for r in records if r.action == "run_start_forced"]
        assert len(started) == 1
        not_ready = json.loads(started[0].new_value)["not_ready"]
        assert any("o2 (o2-luminox)" in item for item in not_ready)
    finally:
        await forced.transports.close()
        forced.journal.close()


async def test_a_new_run_starts_when_every_instrument_reads_good(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD) as st:
        assert st.runner.run is not None
        assert "started run" in st.runner.describe()


async def test_resume_refuses_another_recipe_and_says_how_to_end_the_old_run(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path, HOLD) as st:
        await st.cycles(3)
        run_id = st.runner.run.run_id if st.runner.run else ""
        site_path = tmp_path / "site.toml"
    other = RecipeSource.from_file(recipe_file(tmp_path, OTHER, "other.toml"))
    with pytest.raises(ConfigError) as caught:
        await build_service(load_site(site_path), ["ws1"], other, clock=SteppedClock(T0))
    message = str(caught.value)
    assert f"unfinished run {run_id}" in message
    assert "not of 'hold 5 %, another recipe'" in message
    assert f"hypoxia ctl stop SITE --reactor ws1 --run {run_id}" in message


async def test_a_resumed_run_keeps_outputs_safe_until_its_readings_are_trusted(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path, HOLD) as st:
        await st.cycles(20)
    site_path = tmp_path / "site.toml"
    async with stack(tmp_path, "", site_path=site_path) as st:
        assert st.runner.awaiting_trust
        assert "resumed run" in st.runner.describe()
        st.sim.sim("o2-luminox").faults.no_reply = True
        await st.cycles(5)
        assert st.runner.awaiting_trust
        assert st.runner.snapshot.actuation["n2_lpm"] == 0.0
        assert st.runner.snapshot.actuation["heater_w"] == 0.0
        assert not st.journal_events("readings_trusted")
        st.sim.sim("o2-luminox").faults.clear()
        await st.cycles(5)
        assert not st.runner.awaiting_trust
        (trusted,) = st.journal_events("readings_trusted")
        assert "o2" in trusted["readings"]


def test_speed_is_refused_against_real_instruments(tmp_path: Path) -> None:
    path = site_file(tmp_path)
    path.write_text(path.read_text().replace("simulated = true", "simulated = false"))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "hypoxia",
            "run",
            str(path),
            str(ROOT / "examples/recipes/short-demo.toml"),
            "--speed",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--speed" in run.stderr
    assert "real instruments" in run.stderr
    assert "allowed: 1" in run.stderr


async def test_an_hour_without_any_instrument_writes_a_bounded_number_of_events(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path, HOLD) as st:
        await st.cycles(30)
        before = {e["kind"] for e in st.journal_events("actuator_fault")}
        assert not before
        await st.sim.close()  # every instrument gone
        await st.cycles(3600)
        run = st.runner.run
        assert run is not None
        events = st.service.journal.events(run.run_id)
        faults = [e for e in events if e["kind"] == "actuator_fault"]
        # one fault per actuator role at most (it was 5 per cycle: ~18 000 in this hour)
        assert len(faults) <= 5
        assert len({e["role"] for e in faults}) == len(faults)
        assert len(events) < 120, {e["kind"] for e in events}
        assert st.runner.outputs.faults  # still failing, and counted
        assert max(count for _, count, _ in st.runner.outputs.faults.values()) > 100


async def test_a_harvest_due_during_a_hold_waits_and_is_released_late_with_its_overshoot(
    tmp_path: Path,
) -> None:
    short = (ROOT / "examples/recipes/short-demo.toml").read_text()
    async with stack(tmp_path, short) as st:
        engine = st.runner.engine
        assert engine is not None
        assert engine.clock is not None
        for _ in range(40):  # into the band: exposure starts counting
            await st.cycles(30)
            if engine.clock.exposure_s > 60.0:
                break
        run = st.runner.run
        assert run is not None
        processor = st.service.processor
        assert processor is not None
        hold = {"verb": "hold", "reactor": "ws1", "run_id": run.run_id, "user": "olga"}
        assert processor.handle(hold).ok
        await st.cycles(150)  # exposure passes 120 s while held
        assert engine.clock.exposure_s > 150.0
        assert not st.journal_events("harvest_due")  # nothing released during the hold
        (waiting,) = st.journal_events("harvest_waiting")  # announced once
        assert waiting["harvest"] == "CM-2min"
        assert waiting["due_exposure_s"] == pytest.approx(120.0, abs=0.1)
        restart = {**hold, "verb": "restart"}
        assert processor.handle(restart).ok
        await st.cycles(2)
        (due,) = st.journal_events("harvest_due")
        assert due["name"] == "CM-2min"
        assert due["overshoot_s"] == pytest.approx(due["exposure_s"] - 120.0, abs=0.1)
        assert due["overshoot_s"] > 25.0
        (late,) = st.journal_events("harvest_late")
        assert late["overshoot_s"] == due["overshoot_s"]


def _alicat(st: Stack, name: str) -> AlicatState:
    sim = st.sim.sim(name)
    assert isinstance(sim, AlicatAsciiSim | AlicatModbusSim)
    return sim.state


async def test_the_safe_state_holds_mixer_valves_closed_and_control_releases_them(
    tmp_path: Path,
) -> None:
    async with stack(tmp_path, HOLD) as st:
        await st.cycles(20)
        assert st.link.setpoints_lpm["N2"] > 0.0
        await st.runner.safe_outputs()
        for name in ("mfc-n2", "mfc-air", "mfc-co2"):
            assert _alicat(st, name).hold == "closed", name
        assert st.runner.outputs.held_closed == {"n2_mixer", "air_mixer", "co2_mixer"}
        await st.cycles(5)  # control asks for N2 again: the hold is cancelled first
        assert _alicat(st, "mfc-n2").hold is None
        assert st.link.setpoints_lpm["N2"] > 0.0
        assert "n2_mixer" not in st.runner.outputs.held_closed
        assert not st.journal_events("actuator_fault")


async def test_the_measured_o2_is_pushed_to_the_compensating_co2_probe(tmp_path: Path) -> None:
    async with stack(tmp_path, HOLD) as st:
        probe = st.sim.sim("co2-gmp251")
        assert isinstance(probe, GmpSim)
        assert probe.o2_compensation_pct == 0.0
        await st.cycles(2)
        o2 = st.runner.snapshot.readings["o2"]["value"]
        assert probe.o2_compensation_pct == pytest.approx(o2, abs=0.5)
        assert probe.o2_compensation_pct > 20.0
        await st.cycles(900)  # the purge takes O2 down: pushed again whenever it moved 0.5 %
        now = st.runner.snapshot.readings["o2"]["value"]
        assert now < 10.0
        assert probe.o2_compensation_pct == pytest.approx(now, abs=0.5)
        assert not st.journal_events("actuator_fault")


async def test_a_co2_mfc_left_on_air_refuses_the_run_unless_it_can_be_selected(
    tmp_path: Path,
) -> None:
    site = load_site(site_file(tmp_path))
    clock = SteppedClock(T0)
    sim = await serve_site(site, load_vessel("workstation-100l"), clock, seed=1)
    recipe = RecipeSource.from_file(recipe_file(tmp_path, HOLD))
    try:
        mfc = sim.sim("mfc-co2")
        assert isinstance(mfc, AlicatAsciiSim)
        mfc.state.gas = 0  # on its air calibration
        mfc.state.gas_select = False  # and the instrument takes no gas selection
        with pytest.raises(ConfigError) as caught:
            await build_service(site, ["ws1"], recipe, clock=clock, open_wait_s=2.0)
        message = str(caught.value)
        assert "reactor ws1: co2_mixer gas (mfc-co2): gas_select_refused" in message, message
        assert "it reports Air" in message
        assert "reports gas Air, the site file states CO2" in message
        mfc.state.gas_select = True  # an instrument that can be switched: selected and started
        service = await build_service(site, ["ws1"], recipe, clock=clock, open_wait_s=2.0)
        try:
            assert service.runners["ws1"].run is not None
            assert mfc.state.gas == 4  # CO2, selected by the service at start
        finally:
            await service.transports.close()
            service.journal.close()
    finally:
        await sim.close()


async def test_a_cylinder_that_runs_out_before_the_run_ends_raises_an_alarm(
    tmp_path: Path,
) -> None:
    path = site_file(tmp_path)
    path.write_text(
        path.read_text()
        + '\n[[page.cylinders]]\nreactor = "ws1"\ngas = "co2"\ncapacity_l = 50.0\ncontent_l = 2.0\n'
        + '\n[[page.cylinders]]\nreactor = "ws1"\ngas = "n2"\ncapacity_l = 10000.0\n'
    )
    async with stack(tmp_path, HOLD, site_path=path) as st:
        await st.cycles(70)  # a forecast every 60 s of run time
        assert st.alarm("gas_cylinder") == "active_unacknowledged"
        (raised,) = [e for e in st.journal_events("alarm") if e["alarm"] == "gas_cylinder"]
        assert "co2" in raised["message"].lower()
        rows = {row["gas"]: row for row in st.runner.supply}
        assert rows["co2"]["severity"] in ("warning", "critical")
        assert rows["n2"]["severity"] is None  # 10 000 L lasts the run
        assert rows["co2"]["used_l"] > 0.0
        state = st.runner.state_message()
        assert {row["gas"] for row in state["gas_supply"]} >= {"n2", "co2"}
        assert state["alarms"]["gas_cylinder"] == "active_unacknowledged"
