"""``hypoxia calibrate``: record a sensor calibration point (controller/service/calibration.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, cast

import typer

from common.config_errors import ConfigError
from controller.service.calibration import (
    CalPoint,
    RoleCalibration,
    Step,
    calibration_path,
    humid_air_o2_pct,
    load_calibrations,
    record_step,
    save_calibrations,
)
from controller.service.identify import service_running
from hypoxia.cli_common import SiteArg, acting_user, fail, load_site_or_exit, out

if TYPE_CHECKING:
    from controller.service.site import ReactorConfig, SiteConfig, UserConfig
    from drivers.reading import Reading
    from drivers.registry import RoleSet

CALIBRATING_ROLES = ("engineer", "admin")
STABLE_BAND = {"o2": 0.05, "co2": 0.05, "temperature": 0.1, "do": 0.5}
"""Largest drift over the averaging window for a reading to count as settled, in the role's
unit (%, %, degC, % air saturation); other roles 0.05."""
DEFAULT_STABLE_BAND = 0.05
STABLE_WINDOW_S = 60.0
"""The readings of this last stretch must be stable before a point is taken, s."""
Progress = Callable[[int, float, float | None], None]
"""Told every reading: its number, value and the window's drift so far (None: window not full)."""


@dataclass(frozen=True)
class AirReference:
    """Room air as the span reference of an O2 sensor (:func:`humid_air_o2_pct`).

    Attributes:
        rh_pct: The room's relative humidity, % (a hygrometer beside the chamber).
        temp_c: The room's temperature, degC; ``None``: the O2 sensor's own temperature reading.
        pressure_mbar: Barometric pressure, mbar; ``None``: the O2 sensor's own barometer.
    """

    rh_pct: float
    temp_c: float | None = None
    pressure_mbar: float | None = None


@dataclass(frozen=True)
class CalibrationResult:
    """What one calibration step did.

    Attributes:
        calibration: The role's calibration afterwards.
        raw: Mean raw reading over the samples.
        before: That reading with the correction in force before the step.
        after: That reading with the new correction (the reference, for a consistent step).
        spread: Largest minus smallest raw sample.
        reference: The reference used (for room air: computed, see ``reference_how``).
        reference_how: How the reference was obtained, in words.
    """

    calibration: RoleCalibration
    raw: float
    before: float
    after: float
    spread: float
    reference: float
    reference_how: str


def calibrating_user(site: SiteConfig, name: str | None, reactor: str) -> UserConfig:
    """The site user taking the point: ``name``, else the one mapped to this OS account.

    Raises:
        ConfigError: No such user, or one who may not calibrate this reactor.
    """
    return acting_user(site, name, reactor, CALIBRATING_ROLES, "calibrate")


def window_drift(values: list[float], interval_s: float) -> float:
    """How far the least-squares line through readings ``interval_s`` apart moves across them."""
    if len(values) < 2 or interval_s <= 0.0:
        return 0.0
    xs = [i * interval_s for i in range(len(values))]
    slope, _ = statistics.linear_regression(xs, values)
    return abs(slope) * xs[-1]


async def _stable_samples(
    read: Callable[[], Awaitable[Reading]],
    role: str,
    samples: int,
    interval_s: float,
    stable_band: float | None,
    settle_s: float,
    progress: Progress | None,
    stable_window_s: float = STABLE_WINDOW_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[float]:
    """The last ``samples`` good readings once they are stable (see :func:`calibrate_step`).

    Stable: the readings of the last ``stable_window_s`` (at least ``samples`` of them) drift by
    no more than the band along their least-squares line. A sensor settling with time constant
    tau still has about drift / (e^(window / tau) - 1) to go, so the window is long against the
    sensors' response times (LuminOx T90 < 30 s) and not only the averaging count.
    """
    band = STABLE_BAND.get(role, DEFAULT_STABLE_BAND) if stable_band is None else stable_band
    reads = max(samples, math.ceil(stable_window_s / interval_s)) if interval_s > 0 else samples
    window: deque[float] = deque(maxlen=reads)
    max_reads = reads + (math.ceil(settle_s / interval_s) if interval_s > 0 else 0)
    drift: float | None = None
    for i in range(max_reads):
        if i:
            await sleep(interval_s)
        reading = await read()
        if not reading.trusted:
            why = f"{reading.quality.value}: {reading.reason}"
            raise ConfigError("--device", "", f"{role} reading not good ({why}): not recorded")
        window.append(reading.value)
        drift = window_drift(list(window), interval_s) if len(window) == reads else None
        if progress is not None:
            progress(i + 1, reading.value, drift)
        if drift is not None and drift <= band:
            return list(window)[-samples:]
    raise ConfigError(
        "--device",
        "",
        f"{role} not stable after {settle_s:g} s: the last {reads} readings drift by "
        f"{drift or 0.0:.4g} (allowed: at most {band:g}; let the chamber settle, then retry, or "
        "give a longer --settle-s or a wider --stable-band): not recorded",
    )


async def _reference_value(
    reference: float | AirReference, config: ReactorConfig, roles: RoleSet, role: str
) -> tuple[float, str]:
    """The reference as a number, and how it was obtained.

    Room air: from humidity, temperature and barometric pressure (the sensor's own where given).
    """
    if not isinstance(reference, AirReference):
        return reference, "given"
    if role not in ("o2", "o2_secondary"):
        raise ConfigError("--reference", "", f"air is a reference for O2 sensors, not {role}")
    from drivers.catalog import device_roles

    own: dict[str, Reading] = {}
    name = next((d.name for d in config.devices if role in device_roles(d)), None)
    if name is not None and name in roles.devices:
        with contextlib.suppress(Exception):
            own = await roles.devices[name].read_all()
    sources = []
    values: list[float] = []
    for given, key, what, option in (
        (reference.temp_c, "temp_c", "temperature", "--room-temp-c"),
        (reference.pressure_mbar, "pressure_mbar", "pressure", "--pressure-mbar"),
    ):
        measured = own.get(key)
        if given is not None:
            values.append(given)
            sources.append(f"{what} {given:g} given")
        elif measured is not None and measured.trusted:
            values.append(measured.value)
            sources.append(f"{what} {measured.value:.1f} from the sensor")
        else:
            msg = f"the {role} sensor reports no good {what}: give {option} for room air"
            raise ConfigError(option, "", msg)
    temp_c, pressure_mbar = values
    o2_pct = humid_air_o2_pct(temp_c, reference.rh_pct, pressure_mbar)
    how = f"room air at {reference.rh_pct:g} % RH, {', '.join(sources)}: {o2_pct:.3f} %"
    return o2_pct, how


def parse_reference(text: str, rh_pct: float | None) -> float | AirReference:
    """``--reference``: a number, or ``air`` (which needs ``--rh-pct``)."""
    if text.strip().lower() == "air":
        if rh_pct is None:
            raise ConfigError("--rh-pct", "", "room air as reference needs the room's humidity")
        return AirReference(rh_pct)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError("--reference", "", f"{text!r} (allowed: a number, or air)") from None
    if not math.isfinite(value):
        raise ConfigError("--reference", "", f"{text!r} (allowed: a finite number, or air)")
    return value


async def calibrate_step(
    site: SiteConfig,
    reactor: str,
    role: str,
    step: Step,
    reference: float | AirReference,
    user: UserConfig,
    *,
    samples: int = 10,
    interval_s: float = 1.0,
    wait_s: float = 3.0,
    stable_band: float | None = None,
    settle_s: float = 600.0,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Wait until the sensor is stable, average ``samples`` readings, record, save and audit.

    Stable: the readings of the last minute (:data:`STABLE_WINDOW_S`, at least ``samples``)
    drift by no more than ``stable_band`` (the role's default from :data:`STABLE_BAND`) along
    their least-squares line; readings go on every ``interval_s`` until they are, for at most
    ``settle_s``.

    Raises:
        ConfigError: Unknown reactor or role, a reading that is not good, or a point that
            cannot define a correction.
    """
    from controller.service.audit import AuditTrail
    from drivers.catalog import Transports, open_devices

    try:
        config = site.reactor(reactor)
    except KeyError:
        raise ConfigError("--reactor", "", f"no reactor {reactor!r} in {site.site}") from None
    transports = Transports.create(site.buses, site.lines)
    await transports.open(wait_s=wait_s)
    try:
        roles = open_devices(config.devices, transports)
        if role not in roles.readers:
            allowed = ", ".join(sorted(roles.readers))
            raise ConfigError("--device", "", f"{role!r} is no sensor role (allowed: {allowed})")
        for device in roles.devices.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(device.start(), timeout=2.0)
        reference, how = await _reference_value(reference, config, roles, role)
        values = await _stable_samples(
            roles.readers[role], role, samples, interval_s, stable_band, settle_s, progress
        )
    finally:
        await transports.close()
    raw = statistics.fmean(values)
    path = calibration_path(site.state_dir)
    calibrations = load_calibrations(path)
    old = calibrations.of(reactor, role) or RoleCalibration()
    now = datetime.now(UTC)
    point = CalPoint(reference=reference, raw=raw, at_utc=now, by=user.name)
    try:
        new = record_step(calibrations, reactor, role, step, point)
    except ValueError as exc:
        raise ConfigError("--step", "", str(exc)) from None
    save_calibrations(path, calibrations)
    audit = AuditTrail.open(site.state_dir / "audit.sqlite", site.audit_key_path)
    try:
        audit.append(
            now,
            user.name,
            user.role,
            "calibrate",
            f"{reactor}/{role}",
            old=json.loads(old.model_dump_json()),
            new=json.loads(new.model_dump_json()),
            reason=f"{step}: reference {reference:g} ({how}), raw {raw:g} (mean of {samples})",
        )
    finally:
        audit.conn.close()
    return CalibrationResult(
        new, raw, old.correct(raw), new.correct(raw), max(values) - min(values), reference, how
    )


def _show_progress(role: str, samples: int) -> Progress:
    """Print each reading and, once the window is full, its drift (the guided step)."""

    def show(n: int, value: float, drift: float | None) -> None:
        state = f"drift {drift:.4f} over the last minute" if drift is not None else "settling"
        out.print(f"  {role} reading {n}: {value:.4f} ({state})", highlight=False)

    return show


def calibrate(
    site_path: SiteArg,
    reactor: Annotated[str, typer.Option(help="Reactor id.")],
    device: Annotated[str, typer.Option(help="Sensor role: o2, co2, temperature, do, ...")],
    step: Annotated[str, typer.Option(help="zero, span or offset.")],
    reference: Annotated[
        str,
        typer.Option(
            help="The true value the sensor is exposed to, or `air` (O2 span in room air: "
            "needs --rh-pct; computed at the measured pressure)."
        ),
    ],
    user: Annotated[
        str | None, typer.Option(help="Site user (engineer or admin); default: your OS account's.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Readings averaged.", min=1, max=600)] = 10,
    interval_s: Annotated[float, typer.Option(help="Seconds between readings.", min=0)] = 1.0,
    stable_band: Annotated[
        float | None,
        typer.Option(
            help="Largest drift over the averaged readings to call them settled, in the "
            "sensor's unit (default: O2 and CO2 0.05 %, temperature 0.1 degC).",
            min=0,
        ),
    ] = None,
    settle_s: Annotated[
        float, typer.Option(help="Longest wait for the reading to settle, s.", min=0)
    ] = 600.0,
    rh_pct: Annotated[
        float | None,
        typer.Option(help="Room relative humidity for --reference air, %.", min=0, max=100),
    ] = None,
    room_temp_c: Annotated[
        float | None,
        typer.Option(
            help="Room temperature for --reference air, degC (default: the O2 sensor's).",
            min=0,
            max=40,
        ),
    ] = None,
    pressure_mbar: Annotated[
        float | None,
        typer.Option(
            help="Barometric pressure for --reference air, mbar (default: the O2 sensor's "
            "barometer).",
            min=500,
            max=1200,
        ),
    ] = None,
) -> None:
    """Record a calibration point of one sensor (the service stopped), audited.

    Expose the sensor to the reference first (O2: N2 for zero, room air for span: `--reference
    air --rh-pct 45`, which computes the O2 of humid air at the measured pressure). The point is
    kept in state_dir/calibration.json; the service corrects that sensor's readings
    from its next start.
    """
    site = load_site_or_exit(site_path)
    if step not in ("zero", "span", "offset"):
        raise fail(f"--step: {step!r} (allowed: zero, span, offset)")
    if service_running(site):
        raise fail(f"the service of {site.site} is running: stop it first (it holds the ports)")
    try:
        ref = parse_reference(reference, rh_pct)
        if isinstance(ref, AirReference):
            ref = AirReference(ref.rh_pct, room_temp_c, pressure_mbar)
        who = calibrating_user(site, user, reactor)
        result = asyncio.run(
            calibrate_step(
                site,
                reactor,
                device,
                cast("Step", step),
                ref,
                who,
                samples=samples,
                interval_s=interval_s,
                stable_band=stable_band,
                settle_s=settle_s,
                progress=_show_progress(device, samples),
            )
        )
    except ConfigError as exc:
        raise fail(exc) from None
    out.print(
        f"{reactor}/{device} {step}: raw {result.raw:.4f} (spread {result.spread:.4f}), "
        f"read {result.before:.4f} before, {result.after:.4f} now; reference "
        f"{result.reference:g} ({result.reference_how}); "
        f"by {who.name}; saved in {calibration_path(site.state_dir)}",
        highlight=False,
    )
