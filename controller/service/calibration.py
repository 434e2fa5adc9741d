"""Sensor calibration: per-reactor, per-role zero / span / offset points (docs/deploy.md).

An engineer records calibration points offline with ``hypoxia calibrate`` (the service stopped,
the sensor exposed to a reference: N2 for the O2 zero, room air at 20.9 % for its span). Each point
keeps the sensor's **raw** reading, the reference value, when and by whom, in
``state_dir/calibration.json``; the service applies the resulting correction to every reading of
that role as it comes in (:func:`calibrate_readers`, wired in at start-up), so control, telemetry
and the batch record all see corrected values.

The correction is linear in the raw value: two points (zero and span) fix gain and offset, a zero
alone an offset, a span alone a gain through the origin; an ``offset`` point then shifts the line
by what the reference showed at that point. Because raw readings are stored, recording a step never
depends on the correction in force; a new zero or span clears an older offset point (it was taken
against the previous line).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.config_errors import ConfigError
from controller.core.gas_liquid import X_O2_DRY_AIR, vapour_pressure_mmhg
from drivers.reading import Reading
from drivers.registry import ReadFn, RoleSet

CALIBRATION_FILE = "calibration.json"
Step = Literal["zero", "span", "offset"]
MIN_SPAN_RAW = 1e-6  # raw span and zero readings closer than this cannot define a gain


class CalPoint(BaseModel):
    """One calibration point.

    Attributes:
        reference: The true value the sensor was exposed to, in the sensor's unit.
        raw: The sensor's uncorrected reading then (mean of the samples taken).
        at_utc: When it was taken.
        by: Who took it (the engineer's site user name).
    """

    model_config = ConfigDict(extra="forbid")

    reference: float
    raw: float
    at_utc: datetime
    by: str = Field(min_length=1, max_length=64)


class RoleCalibration(BaseModel):
    """The calibration of one sensor role of one reactor."""

    model_config = ConfigDict(extra="forbid")

    zero: CalPoint | None = None
    span: CalPoint | None = None
    offset: CalPoint | None = None

    def line(self, raw: float) -> float:
        """The zero / span correction alone."""
        if self.zero is not None and self.span is not None:
            gain = (self.span.reference - self.zero.reference) / (self.span.raw - self.zero.raw)
            return self.zero.reference + gain * (raw - self.zero.raw)
        if self.zero is not None:
            return raw + self.zero.reference - self.zero.raw
        if self.span is not None and abs(self.span.raw) > MIN_SPAN_RAW:
            return raw * self.span.reference / self.span.raw
        return raw

    def correct(self, raw: float) -> float:
        """The corrected value of a raw reading."""
        value = self.line(raw)
        if self.offset is not None:
            value += self.offset.reference - self.line(self.offset.raw)
        return value

    def last_utc(self) -> datetime | None:
        """When the newest point was taken (``None`` before the first)."""
        times = [p.at_utc for p in (self.zero, self.span, self.offset) if p is not None]
        return max(times) if times else None


class Calibrations(BaseModel):
    """``state_dir/calibration.json``: calibrations by ``"<reactor>/<role>"``."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    roles: dict[str, RoleCalibration] = Field(default_factory=dict)

    def of(self, reactor: str, role: str) -> RoleCalibration | None:
        """The calibration of one reactor's role, if any."""
        return self.roles.get(f"{reactor}/{role}")


MMHG_PER_MBAR = 760.0 / 1013.25


def humid_air_o2_pct(temp_c: float, rh_pct: float, pressure_mbar: float) -> float:
    """O2 in room air as a sensor reporting vol-% of the gas it sees reads it, %.

    Dry air holds 20.946 % O2; water vapour dilutes it by its share of the total pressure:
    ``20.946 * (1 - RH * p_sat(T) / P)`` (p_sat by Buck 1981, docs/physics.md §B6). At 22 degC,
    50 % RH and 1013 mbar that is 20.67 %, 0.28 % below the dry figure — six times the 0.05 %
    a span must reach. A sensor reporting O2 as ppO2 / P (the LuminOx) sees exactly this.

    Args:
        temp_c: Room air temperature, degC (0-40).
        rh_pct: Its relative humidity, % (0-100).
        pressure_mbar: Barometric pressure, mbar (500-1200).
    """
    water_mbar = rh_pct / 100.0 * vapour_pressure_mmhg(temp_c) / MMHG_PER_MBAR
    return 100.0 * X_O2_DRY_AIR * (1.0 - water_mbar / pressure_mbar)


def calibration_path(state_dir: Path) -> Path:
    """Where a site keeps its calibrations."""
    return state_dir / CALIBRATION_FILE


def load_calibrations(path: Path) -> Calibrations:
    """The calibrations in ``path`` (none when the file does not exist).

    Raises:
        ConfigError: The file is not valid JSON or not a calibration file.
    """
    if not path.exists():
        return Calibrations()
    try:
        return Calibrations.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(str(path), "", f"not a calibration file: {exc}") from None


def save_calibrations(path: Path, calibrations: Calibrations) -> None:
    """Write ``path`` atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(calibrations.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)


def record_step(
    calibrations: Calibrations,
    reactor: str,
    role: str,
    step: Step,
    point: CalPoint,
) -> RoleCalibration:
    """Add one calibration point (replacing the role's previous point of that step).

    Returns:
        The role's calibration with the new point.

    Raises:
        ValueError: The point cannot define a correction (not finite, or a zero and span whose
            raw readings or references coincide).
    """
    if not (math.isfinite(point.raw) and math.isfinite(point.reference)):
        msg = f"{step}: reading {point.raw} and reference {point.reference} must be finite"
        raise ValueError(msg)
    key = f"{reactor}/{role}"
    old = calibrations.roles.get(key, RoleCalibration())
    new = old.model_copy(update={step: point})
    if step in ("zero", "span"):
        new = new.model_copy(update={"offset": None})  # taken against the previous line
    if new.zero is not None and new.span is not None:
        if abs(new.span.raw - new.zero.raw) < MIN_SPAN_RAW:
            msg = f"{step}: span and zero read the same raw value ({point.raw}): no gain follows"
            raise ValueError(msg)
        if new.span.reference == new.zero.reference:
            msg = f"{step}: span and zero references are both {point.reference}"
            raise ValueError(msg)
    calibrations.roles[key] = new
    return new


def calibrated_reader(read: ReadFn, calibration: RoleCalibration) -> ReadFn:
    """A reader that corrects the value of every reading of ``read``."""

    async def reader() -> Reading:
        reading = await read()
        if not math.isfinite(reading.value):
            return reading
        return replace(reading, value=calibration.correct(reading.value))

    return reader


def calibrate_readers(roles: RoleSet, calibrations: Calibrations, reactor: str) -> list[str]:
    """Wrap each calibrated sensor role of ``roles`` so its readings come in corrected.

    Returns:
        The roles now corrected.
    """
    done: list[str] = []
    for role, read in list(roles.readers.items()):
        calibration = calibrations.of(reactor, role)
        if calibration is not None and calibration.last_utc() is not None:
            roles.readers[role] = calibrated_reader(read, calibration)
            done.append(role)
    return done


def calibrations_due(
    calibrations: Calibrations,
    reactor: str,
    roles: list[str],
    now_utc: datetime,
    interval_days: float,
) -> dict[str, str]:
    """Roles whose calibration is older than ``interval_days`` (or missing), with why.

    Returns:
        Role -> ``"last calibrated 2026-01-02 (95 days ago)"`` or ``"never calibrated"``.
    """
    due: dict[str, str] = {}
    for role in roles:
        calibration = calibrations.of(reactor, role)
        last = calibration.last_utc() if calibration else None
        if last is None:
            due[role] = "never calibrated"
        elif now_utc - last > timedelta(days=interval_days):
            age_d = (now_utc - last).total_seconds() / 86400.0
            due[role] = f"last calibrated {last.astimezone(UTC):%Y-%m-%d} ({age_d:.0f} days ago)"
    return due


CALIBRATION_CHECK_EVERY_S = 60.0
"""How often a running reactor re-checks its calibrations' age, s of UTC."""


def describe_calibration(calibration: RoleCalibration | None) -> str:
    """One line for people: each point's step, reference, date and engineer."""
    if calibration is None or calibration.last_utc() is None:
        return "not calibrated"
    parts = []
    for step in ("zero", "span", "offset"):
        p: CalPoint | None = getattr(calibration, step)
        if p is not None:
            parts.append(
                f"{step} {p.reference:g} (read {p.raw:.3g}) {p.at_utc.astimezone(UTC):%Y-%m-%d} "
                f"by {p.by}"
            )
    return "; ".join(parts)


@dataclass(slots=True)
class CalibrationWatch:
    """The calibrations of one reactor's sensors while it runs: which are due, what is in force.

    The service keeps one per reactor: the calibration-due alarm and the run's record use it.

    Attributes:
        calibrations: The site's calibrations as loaded at start-up (``hypoxia calibrate`` refuses
            while the service runs, so they cannot change under a run).
        reactor: The reactor's id.
        roles: The reactor's sensor roles (``o2``, ``co2``, ``temperature`` …).
        interval_days: The site's ``calibration_interval_days`` (``None``: never due).
    """

    calibrations: Calibrations
    reactor: str
    roles: list[str]
    interval_days: float | None
    due: dict[str, str] = field(default_factory=dict)
    _checked_utc: datetime | None = None

    def check(self, now_utc: datetime) -> str | None:
        """The calibration-due message now (``None``: no interval set; ``""``: none due).

        Else ``"o2: last calibrated 2026-01-02 (95 days ago); co2: never calibrated"``;
        re-evaluated at most every :data:`CALIBRATION_CHECK_EVERY_S`.
        """
        if self.interval_days is None:
            return None
        checked = self._checked_utc
        if checked is None or (now_utc - checked).total_seconds() >= CALIBRATION_CHECK_EVERY_S:
            self.due = calibrations_due(
                self.calibrations, self.reactor, self.roles, now_utc, self.interval_days
            )
            self._checked_utc = now_utc
        return "; ".join(f"{role}: {why}" for role, why in sorted(self.due.items()))

    def in_force(self) -> dict[str, str]:
        """Role -> the calibration applied to its readings, in words."""
        return {
            role: describe_calibration(self.calibrations.of(self.reactor, role))
            for role in self.roles
        }
