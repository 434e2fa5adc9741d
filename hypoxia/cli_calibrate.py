"""``hypoxia calibrate``: record a sensor calibration point (controller/service/calibration.py)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import socket
import statistics
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
    load_calibrations,
    record_step,
    save_calibrations,
)
from hypoxia.cli_common import SiteArg, fail, load_site_or_exit, out

if TYPE_CHECKING:
    from controller.service.site import SiteConfig, UserConfig

CALIBRATING_ROLES = ("engineer", "admin")


@dataclass(frozen=True)
class CalibrationResult:
    """What one calibration step did.

    Attributes:
        calibration: The role's calibration afterwards.
        raw: Mean raw reading over the samples.
        before: That reading with the correction in force before the step.
        after: That reading with the new correction (the reference, for a consistent step).
        spread: Largest minus smallest raw sample.
    """

    calibration: RoleCalibration
    raw: float
    before: float
    after: float
    spread: float


def calibrating_user(site: SiteConfig, name: str | None, reactor: str) -> UserConfig:
    """The site user taking the point: ``name``, else the one mapped to this OS account.

    Raises:
        ConfigError: No such user, or one who may not calibrate this reactor.
    """
    if name is None:
        account, uid = getpass.getuser(), os.getuid()
        mapped = [u for u in site.users if u.os_user == account or u.uid == uid]
        if not mapped:
            raise ConfigError("--user", "", f"OS account {account} is no site user: name one")
        name = mapped[0].name
    user = next((u for u in site.users if u.name == name), None)
    if user is None:
        raise ConfigError("--user", "", f"no site user {name!r}")
    if user.role not in CALIBRATING_ROLES or not user.may_command(reactor):
        raise ConfigError(
            "--user",
            "",
            f"{name} ({user.role}) may not calibrate reactor {reactor} "
            f"(allowed: {' or '.join(CALIBRATING_ROLES)} for the reactor)",
        )
    return user


def service_running(site: SiteConfig) -> bool:
    """True when the site's service answers on its control socket."""
    path = site.socket_path
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock, contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.connect(str(path))
        return True
    return False


async def calibrate_step(
    site: SiteConfig,
    reactor: str,
    role: str,
    step: Step,
    reference: float,
    user: UserConfig,
    *,
    samples: int = 10,
    interval_s: float = 1.0,
    wait_s: float = 3.0,
) -> CalibrationResult:
    """Read the sensor ``samples`` times, record the point, save it and audit it.

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
        values: list[float] = []
        for i in range(samples):
            if i:
                await asyncio.sleep(interval_s)
            reading = await roles.readers[role]()
            if not reading.trusted:
                why = f"{reading.quality.value}: {reading.reason}"
                raise ConfigError("--device", "", f"{role} reading not good ({why}): not recorded")
            values.append(reading.value)
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
            reason=f"{step}: reference {reference:g}, raw {raw:g} (mean of {samples})",
        )
    finally:
        audit.conn.close()
    return CalibrationResult(
        new, raw, old.correct(raw), new.correct(raw), max(values) - min(values)
    )


def calibrate(
    site_path: SiteArg,
    reactor: Annotated[str, typer.Option(help="Reactor id.")],
    device: Annotated[str, typer.Option(help="Sensor role: o2, co2, temperature, do, ...")],
    step: Annotated[str, typer.Option(help="zero, span or offset.")],
    reference: Annotated[float, typer.Option(help="The true value the sensor is exposed to.")],
    user: Annotated[
        str | None, typer.Option(help="Site user (engineer or admin); default: your OS account's.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Readings averaged.", min=1, max=600)] = 10,
    interval_s: Annotated[float, typer.Option(help="Seconds between readings.", min=0)] = 1.0,
) -> None:
    """Record a calibration point of one sensor (the service stopped), audited.

    Expose the sensor to the reference first (O2: N2 for zero, room air 20.9 % for span). The
    point is kept in state_dir/calibration.json; the service corrects that sensor's readings
    from its next start.
    """
    site = load_site_or_exit(site_path)
    if step not in ("zero", "span", "offset"):
        raise fail(f"--step: {step!r} (allowed: zero, span, offset)")
    if service_running(site):
        raise fail(f"the service of {site.site} is running: stop it first (it holds the ports)")
    try:
        who = calibrating_user(site, user, reactor)
        result = asyncio.run(
            calibrate_step(
                site,
                reactor,
                device,
                cast("Step", step),
                reference,
                who,
                samples=samples,
                interval_s=interval_s,
            )
        )
    except ConfigError as exc:
        raise fail(exc) from None
    out.print(
        f"{reactor}/{device} {step}: raw {result.raw:.4f} (spread {result.spread:.4f}), "
        f"read {result.before:.4f} before, {result.after:.4f} now; reference {reference:g}; "
        f"by {who.name}; saved in {calibration_path(site.state_dir)}",
        highlight=False,
    )
