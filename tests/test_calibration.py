"""Sensor calibration (controller/service/calibration.py, ``hypoxia calibrate``).

The issue's acceptance: a sensor with a 0.3 % span error and a 0.2 % zero error reads within
0.05 % after the zero / span workflow. Here the arithmetic on a noisy linear sensor, then the
workflow end to end: a point taken from the simulated instruments over their wire protocol,
audited, saved, and applied by the service to the readings it controls on.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.config_errors import ConfigError
from controller.service.calibration import (
    Calibrations,
    CalPoint,
    calibrate_readers,
    calibration_path,
    calibrations_due,
    humid_air_o2_pct,
    load_calibrations,
    record_step,
    save_calibrations,
)
from controller.service.clock import SteppedClock
from controller.service.site import load_site
from drivers.catalog import Transports, open_devices
from drivers.reading import Quality, Reading
from hypoxia.cli import app as cli_app
from hypoxia.cli_calibrate import (
    AirReference,
    _stable_samples,
    calibrate_step,
    calibrating_user,
    parse_reference,
    window_drift,
)
from recorder.stores import Sqlite
from simulators.site_sim import serve_site
from simulators.vessel import load_vessel
from telemetry.config import SqliteStore
from tests.recorded_run import SHORT_DEMO
from tests.records_kit import record_of, write_store
from tests.service_kit import T0, site_file, stack

AIR_O2_PCT = 20.9
ZERO_ERROR_PCT = 0.2
SPAN_ERROR_PCT = 0.3
NOISE_SD_PCT = 0.02
SAMPLES = 10


def raw_o2_pct(true_pct: float, rng: random.Random) -> float:
    """A linear O2 sensor reading 0.2 % at 0 % and 21.2 % in air, with noise."""
    gain = (AIR_O2_PCT + SPAN_ERROR_PCT - ZERO_ERROR_PCT) / AIR_O2_PCT
    return ZERO_ERROR_PCT + gain * true_pct + rng.gauss(0.0, NOISE_SD_PCT)


def point(reference: float, raw: float, by: str = "erik", days_ago: float = 0.0) -> CalPoint:
    """A calibration point taken ``days_ago``."""
    return CalPoint(reference=reference, raw=raw, at_utc=T0 - timedelta(days=days_ago), by=by)


def test_zero_and_span_bring_a_02_zero_03_span_error_within_005() -> None:
    """The acceptance: after zero (N2) and span (air), readings are within 0.05 % O2."""
    rng = random.Random(13)
    cals = Calibrations()
    for step, reference in (("zero", 0.0), ("span", AIR_O2_PCT)):
        raw = sum(raw_o2_pct(reference, rng) for _ in range(SAMPLES)) / SAMPLES
        record_step(cals, "ws1", "o2", step, point(reference, raw))  # type: ignore[arg-type]
    cal = cals.of("ws1", "o2")
    assert cal is not None
    for true_pct in (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, AIR_O2_PCT):
        assert abs(cal.correct(raw_o2_pct(true_pct, rng)) - true_pct) < 0.05, true_pct
    # before: off by up to 0.3 %
    assert abs(raw_o2_pct(AIR_O2_PCT, random.Random(2)) - AIR_O2_PCT) > 0.25


def test_offset_zero_alone_span_alone_and_their_order() -> None:
    """An offset shifts the line; a new zero or span drops an older offset point."""
    cals = Calibrations()
    record_step(cals, "ws1", "co2", "offset", point(5.0, 5.2))
    cal = cals.of("ws1", "co2")
    assert cal is not None
    assert cal.correct(5.2) == pytest.approx(5.0)
    assert cal.correct(2.2) == pytest.approx(2.0)
    cal = record_step(cals, "ws1", "co2", "span", point(10.0, 10.5))
    assert cal.offset is None
    assert cal.correct(10.5) == pytest.approx(10.0)
    assert cal.correct(0.0) == pytest.approx(0.0)  # a span alone is a gain through zero
    cal = record_step(cals, "ws1", "co2", "zero", point(0.0, 0.1))
    assert cal.correct(0.1) == pytest.approx(0.0)
    assert cal.correct(10.5) == pytest.approx(10.0)
    cal = record_step(cals, "ws1", "co2", "offset", point(5.0, 5.4))
    assert cal.correct(5.4) == pytest.approx(5.0)
    assert cal.zero is not None
    assert cal.span is not None
    with pytest.raises(ValueError, match="same raw value"):
        record_step(cals, "ws1", "co2", "span", point(10.0, 0.1))
    with pytest.raises(ValueError, match="finite"):
        record_step(cals, "ws1", "co2", "zero", point(0.0, float("nan")))


def test_the_file_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    """calibration.json is written atomically and read back; garbage is a ConfigError."""
    path = calibration_path(tmp_path)
    assert load_calibrations(path).roles == {}
    cals = Calibrations()
    record_step(cals, "ws1", "o2", "zero", point(0.0, 0.2))
    save_calibrations(path, cals)
    assert load_calibrations(path) == cals
    assert not list(tmp_path.glob(".*.tmp"))
    path.write_text('{"roles": {"ws1/o2": {"zero": {"reference": "x"}}}}')
    with pytest.raises(ConfigError, match="not a calibration file"):
        load_calibrations(path)


def test_a_calibration_is_due_after_the_interval() -> None:
    """Never calibrated, or older than the interval: due, with why."""
    cals = Calibrations()
    record_step(cals, "ws1", "o2", "span", point(20.9, 21.0, days_ago=100))
    record_step(cals, "ws1", "co2", "span", point(5.0, 5.1, days_ago=10))
    due = calibrations_due(cals, "ws1", ["o2", "co2", "temperature"], T0, 90.0)
    assert due == {
        "o2": f"last calibrated {(T0 - timedelta(days=100)):%Y-%m-%d} (100 days ago)",
        "temperature": "never calibrated",
    }


def test_only_an_engineer_or_admin_of_the_reactor_may_calibrate(tmp_path: Path) -> None:
    """olga is an operator: refused; erik is an engineer: allowed; unknown names refused."""
    site = load_site(site_file(tmp_path))
    assert calibrating_user(site, "erik", "ws1").name == "erik"
    with pytest.raises(ConfigError, match="may not calibrate"):
        calibrating_user(site, "olga", "ws1")
    with pytest.raises(ConfigError, match="no site user"):
        calibrating_user(site, "nobody-here", "ws1")


async def test_the_workflow_takes_an_audited_point_and_the_service_applies_it(
    tmp_path: Path,
) -> None:
    """Span the simulated LuminOx (reads about 20.9 % in air) to 20.0 % through its wire
    protocol; the point is saved and audited; the service's O2 readings then come corrected."""
    path = site_file(tmp_path)
    site = load_site(path)
    site.state_dir.mkdir(parents=True, exist_ok=True)
    erik = calibrating_user(site, "erik", "ws1")
    clock = SteppedClock(T0)
    sim = await serve_site(site, load_vessel("workstation-100l"), clock, seed=1)
    try:
        result = await calibrate_step(
            site, "ws1", "o2", "span", 20.0, erik, samples=3, interval_s=0.0, wait_s=5.0
        )
        assert result.raw == pytest.approx(AIR_O2_PCT, abs=0.5)
        assert result.before == result.raw  # nothing calibrated before
        assert result.after == pytest.approx(20.0)
        with pytest.raises(ConfigError, match="no sensor role"):
            await calibrate_step(site, "ws1", "n2_mixer", "zero", 0.0, erik, samples=1)
        # the correction applied to a fresh reading of the same sensor
        transports = Transports.create(site.buses, site.lines)
        await transports.open(wait_s=5.0)
        try:
            roles = open_devices(site.reactor("ws1").devices, transports)
            raw = (await roles.readers["o2"]()).value
            assert calibrate_readers(
                roles, load_calibrations(calibration_path(site.state_dir)), "ws1"
            ) == ["o2"]
            corrected = (await roles.readers["o2"]()).value
        finally:
            await transports.close()
        assert corrected == pytest.approx(raw * 20.0 / result.raw, abs=0.1)
    finally:
        await sim.close()
    saved = load_calibrations(calibration_path(site.state_dir)).of("ws1", "o2")
    assert saved is not None
    assert saved.span is not None
    assert saved.span.by == "erik"
    assert saved.span.reference == 20.0
    assert datetime.now(UTC) - saved.span.at_utc < timedelta(minutes=5)
    with sqlite3.connect(site.state_dir / "audit.sqlite") as conn:
        rows = conn.execute(
            "SELECT user, role, action, target FROM audit WHERE action = 'calibrate'"
        ).fetchall()
    assert rows == [("erik", "engineer", "calibrate", "ws1/o2")]
    # the service, started on the site, controls on corrected readings
    async with stack(tmp_path, SHORT_DEMO.read_text(), site_path=path) as st:
        reading = await st.service.runners["ws1"].roles.readers["o2"]()
        assert reading.value == pytest.approx(20.0, abs=0.3)


def test_the_command_refuses_a_bad_step_and_an_operator(tmp_path: Path) -> None:
    """``hypoxia calibrate``: exit status 2 with the reason, nothing written."""
    path = site_file(tmp_path)
    base = ["calibrate", str(path), "--reactor", "ws1", "--device", "o2", "--reference", "0"]
    bad_step = CliRunner().invoke(cli_app, [*base, "--step", "gain", "--user", "erik"])
    assert bad_step.exit_code == 2
    assert "allowed: zero, span, offset" in bad_step.output
    operator = CliRunner().invoke(cli_app, [*base, "--step", "zero", "--user", "olga"])
    assert operator.exit_code == 2
    assert "may not calibrate" in operator.output
    assert not calibration_path(load_site(path).state_dir).exists()


async def test_a_sensor_past_its_due_date_raises_the_alarm_and_the_record_shows_it(
    tmp_path: Path,
) -> None:
    """Every sensor calibrated; O2's span reaches the 30-day interval two minutes into the run:
    the low-priority calibration_due alarm comes on then (not before), and the calibrations in
    force are in the run's audited start entry, from where the batch record prints them."""
    path = site_file(tmp_path)
    path.write_text(
        path.read_text().replace(
            "simulated = true", "simulated = true\ncalibration_interval_days = 30", 1
        )
    )
    site = load_site(path)
    roles = ["co2", "co2_secondary", "o2", "temperature", "temperature_secondary"]
    cals = Calibrations()
    o2_age = timedelta(days=30) - timedelta(seconds=120)
    record_step(cals, "ws1", "o2", "zero", point(0.0, 0.2, days_ago=31))
    record_step(
        cals, "ws1", "o2", "span", CalPoint(reference=20.9, raw=21.2, at_utc=T0 - o2_age, by="erik")
    )
    for role in (r for r in roles if r != "o2"):
        record_step(cals, "ws1", role, "offset", point(1.0, 1.1, days_ago=1))
    save_calibrations(calibration_path(site.state_dir), cals)
    async with stack(tmp_path, SHORT_DEMO.read_text(), site_path=path) as st:
        assert sorted(st.runner.roles.readers) == roles
        await st.cycles(60)
        assert st.alarm("calibration_due") == "normal"
        await st.cycles(130)
        assert st.alarm("calibration_due") == "active_unacknowledged"
        alarm = st.runner.alarms.alarms["calibration_due"]
        assert alarm.priority.value == "low"
        assert "o2: last calibrated" in alarm.message
        assert "(30 days ago)" in alarm.message
        run = st.runner.run
        assert run is not None
        with sqlite3.connect(site.state_dir / "audit.sqlite") as conn:
            (start,) = conn.execute(
                "SELECT new_value FROM audit WHERE action = 'run_start'"
            ).fetchone()
    in_force = json.loads(start)["calibration"]
    assert in_force["co2"].startswith("offset 1 (read 1.1) ")
    assert in_force["co2"].endswith(" by erik")
    assert in_force["o2"].startswith("zero 0 (read 0.2) ")
    assert "; span 20.9 (read 21.2) " in in_force["o2"]
    # no recorder ran: an empty store, so the record is made of the journal and audit trail
    await write_store(Sqlite(SqliteStore(kind="sqlite"), site.state_dir), [])
    record = record_of(path, run.run_id)
    shown = {i.roles: i.calibration for i in record.instruments}
    assert shown["o2"] == in_force["o2"]
    assert shown["temperature"] == in_force["temperature"]
    assert any(i.calibration == "not recorded" for i in record.instruments)  # the MFCs


def test_a_straight_drift_is_measured_along_its_line() -> None:
    """0.01 %/s over 9 s: the window drifts by 0.09, whatever the noise around the line."""
    noise = [0.004, -0.003, 0.002, -0.004, 0.001, 0.0, -0.002, 0.003, -0.001, 0.002]
    values = [20.0 + 0.01 * i + e for i, e in enumerate(noise)]
    assert window_drift(values, 1.0) == pytest.approx(0.09, abs=0.006)
    assert window_drift(values[:1], 1.0) == 0.0


async def test_the_step_waits_for_a_settling_sensor_and_refuses_one_that_never_settles() -> None:
    """A sensor approaching 20.9 % with a 20 s time constant, read every second, is sampled only
    once its last minute drifts by less than 0.05 % — by then within 0.01 % of its final value;
    a sensor ramping for ever is refused with the figures. The sleep is injected: no real wait."""
    t = {"s": 0.0}

    async def tick(dt_s: float) -> None:
        t["s"] += dt_s

    async def settling() -> Reading:
        return Reading(20.9 - 2.0 * math.exp(-t["s"] / 20.0), "%", Quality.GOOD, t["s"], T0)

    seen: list[tuple[int, float | None]] = []
    values = await _stable_samples(
        settling, "o2", 10, 1.0, None, 600.0, lambda n, _v, d: seen.append((n, d)), sleep=tick
    )
    assert len(values) == 10
    drifts = [d for _, d in seen if d is not None]
    assert all(d is None for _, d in seen[:59])  # a minute of readings before any verdict
    assert drifts[-1] <= 0.05 < drifts[-2]
    assert abs(statistics.fmean(values) - 20.9) < 0.01
    # about the first t with 2 e^(-t/20) (e^(59/20) - 1) <= 0.05 (end-to-end over the window)
    expected_s = 20.0 * math.log(2.0 * (math.exp(59 / 20) - 1.0) / 0.05)
    assert abs(t["s"] - expected_s) < 4.0

    async def ramping() -> Reading:
        return Reading(15.0 + 0.01 * t["s"], "%", Quality.GOOD, t["s"], T0)

    with pytest.raises(ConfigError, match=r"o2 not stable after 300 s: .* drift by 0\.59 "):
        await _stable_samples(ramping, "o2", 10, 1.0, None, 300.0, None, sleep=tick)


def test_humid_room_air_by_hand() -> None:
    """22 degC, 50 % RH, 1013.25 mbar: p_sat = 26.44 mbar (Buck: 6.1121 exp((18.678 - 22/234.5)
    (22 / 279.14))), water 13.22 mbar, O2 20.946 (1 - 13.22 / 1013.25) = 20.673 %."""
    p_sat_mbar = 6.1121 * math.exp((18.678 - 22.0 / 234.5) * (22.0 / (257.14 + 22.0)))
    assert p_sat_mbar == pytest.approx(26.44, abs=0.01)
    by_hand = 20.946 * (1.0 - 0.5 * p_sat_mbar / 1013.25)
    assert humid_air_o2_pct(22.0, 50.0, 1013.25) == pytest.approx(by_hand, abs=1e-9)
    assert by_hand == pytest.approx(20.673, abs=0.001)
    assert humid_air_o2_pct(22.0, 0.0, 900.0) == pytest.approx(20.946)  # dry: pressure-free
    assert humid_air_o2_pct(22.0, 50.0, 900.0) < humid_air_o2_pct(22.0, 50.0, 1013.25)


async def test_a_span_in_room_air_uses_the_sensors_barometer(tmp_path: Path) -> None:
    """`--reference air`: the LuminOx's own barometer (the simulator reports 1013 mbar) and the
    room's humidity and temperature give the reference; the audit says how it was obtained."""
    path = site_file(tmp_path)
    site = load_site(path)
    site.state_dir.mkdir(parents=True, exist_ok=True)
    erik = calibrating_user(site, "erik", "ws1")
    sim = await serve_site(site, load_vessel("workstation-100l"), SteppedClock(T0), seed=1)
    try:
        result = await calibrate_step(
            site, "ws1", "o2", "span", AirReference(50.0, 22.0), erik, samples=3, interval_s=0.0
        )
        with pytest.raises(ConfigError, match="air is a reference for O2 sensors, not co2"):
            await calibrate_step(
                site, "ws1", "co2", "span", AirReference(50.0), erik, samples=1, interval_s=0.0
            )
    finally:
        await sim.close()
    assert result.reference == pytest.approx(humid_air_o2_pct(22.0, 50.0, 1013.0))
    assert result.after == pytest.approx(result.reference)
    assert "room air at 50 % RH, temperature 22 given, pressure 1013.0 from the sensor" in (
        result.reference_how
    )
    with sqlite3.connect(site.state_dir / "audit.sqlite") as conn:
        (reason,) = conn.execute("SELECT reason FROM audit WHERE action = 'calibrate'").fetchone()
    assert f"span: reference {result.reference:g} (room air at 50 % RH" in reason
    with pytest.raises(ConfigError, match="needs the room's humidity"):
        parse_reference("air", None)
    with pytest.raises(ConfigError, match="allowed: a number, or air"):
        parse_reference("twenty", None)
