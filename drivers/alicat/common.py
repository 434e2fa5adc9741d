"""What the Alicat ASCII and Modbus drivers share: gas table, status codes, units, sample type.

Reference: docs/protocols.md §4.1-4.2; Alicat Serial Primer (gas numbers, App. C) and the
2023 "Standard Devices" manual (status flags).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from drivers.base import GasCheck, GasReport
from drivers.errors import DeviceTimeoutError, ProtocolError, WriteVerifyError, as_driver_error
from drivers.quality import Stamp, Stamper
from drivers.reading import Reading
from drivers.registry import MixerRole
from drivers.units import DEG_C, LPM, PSIA

FlowUnit = Literal["SCCM", "SLPM"]
"""Engineering flow unit the device was ordered with (frames and setpoints use it)."""

LPM_PER_UNIT: dict[str, float] = {"SCCM": 0.001, "SLPM": 1.0}

GAS_NUMBERS: dict[int, str] = {
    0: "Air",
    1: "Ar",
    2: "CH4",
    3: "CO",
    4: "CO2",
    5: "C2H6",
    6: "H2",
    7: "He",
    8: "N2",
    9: "N2O",
    10: "Ne",
    11: "O2",
    12: "C3H8",
}
"""Alicat gas numbers -> short names as shown in the data frame."""

DEFAULT_GAS_OF_ROLE: dict[str, str] = {
    "n2_mixer": "N2",
    "air_mixer": "Air",
    "o2_mixer": "O2",
    "co2_mixer": "CO2",
}
"""The gas a mixer role's MFC runs on unless the site file states ``gas``."""

FULL_SCALE_TOLERANCE = 0.01
"""Largest relative difference between reported and configured full scale."""

FIELDS = ("pressure_psia", "temp_c", "vol_flow_lpm", "flow_lpm", "setpoint_lpm")

STATUS_EFFECTS: dict[str, tuple[str, ...]] = {
    "ADC": FIELDS,
    "MOV": ("flow_lpm",),
    "VOV": ("vol_flow_lpm",),
    "POV": ("pressure_psia",),
    "OPL": ("pressure_psia",),
    "TOV": ("temp_c",),
    "HLD": ("flow_lpm", "vol_flow_lpm"),
    "EXH": ("flow_lpm", "vol_flow_lpm"),
    "ABT": FIELDS,
}
"""Which readings each status code invalidates (when the code is in the driver's bad set)."""

STATUS_TEXT: dict[str, str] = {
    "ADC": "internal ADC error",
    "MOV": "mass flow over range",
    "VOV": "volumetric flow over range",
    "POV": "pressure over range",
    "OPL": "over-pressure limit",
    "TOV": "temperature over range",
    "HLD": "valve hold, flow not under setpoint control",
    "EXH": "exhaust mode",
    "ABT": "measurement aborted",
    "LCK": "front panel locked",
    "OVR": "totalizer rollover",
    "TMF": "totalizer missed flow",
    "COM": "digital link idle",
    "GTA": "autotune running",
    "P2O": "second pressure over range",
}

DEFAULT_BAD_STATUS: frozenset[str] = frozenset(STATUS_EFFECTS)
"""Status codes that turn the affected readings BAD. ``HLD``/``EXH`` are included: while the valve
is held the measured flow is real but not controlled; drop them from the set to keep flow GOOD
during a deliberate hold."""


def gas_name(gas: int | str) -> str:
    """Canonical short name (``"co2"`` -> ``"CO2"``).

    Raises:
        ValueError: Unknown gas.
    """
    return GAS_NUMBERS[gas_number(gas)]


def role_gas(gas: str | None, role: str) -> str:
    """The gas of a mixer: the site file's ``gas``, else the role's default (canonical name).

    Raises:
        ValueError: Unknown gas, or no default for ``role``.
    """
    if gas is not None:
        return gas_name(gas)
    if role not in DEFAULT_GAS_OF_ROLE:
        raise ValueError(f"no default gas for role {role!r}; state 'gas'")
    return DEFAULT_GAS_OF_ROLE[role]


def gas_number(gas: int | str) -> int:
    """Alicat gas number for a number or short name (``8`` or ``"N2"``, case-insensitive).

    Raises:
        ValueError: Unknown gas.
    """
    if isinstance(gas, int):
        if gas not in GAS_NUMBERS:
            raise ValueError(f"unknown Alicat gas number {gas}")
        return gas
    for number, short in GAS_NUMBERS.items():
        if short.lower() == gas.strip().lower():
            return number
    raise ValueError(f"unknown Alicat gas {gas!r}; known: {', '.join(GAS_NUMBERS.values())}")


@dataclass(frozen=True, slots=True)
class AlicatSample:
    """One data frame, converted to canonical units.

    Attributes:
        pressure_psia: Absolute line pressure, psia.
        temp_c: Gas temperature, degC.
        vol_flow_lpm: Volumetric flow, actual L/min.
        flow_lpm: Mass flow, standard L/min.
        setpoint_lpm: Mass-flow setpoint, standard L/min (BAD on meters).
        gas: Short name of the selected gas (``"N2"``), ``None`` if unknown.
        status: Status codes present in the frame (``{"HLD"}``, ...).
    """

    pressure_psia: Reading
    temp_c: Reading
    vol_flow_lpm: Reading
    flow_lpm: Reading
    setpoint_lpm: Reading
    gas: str | None
    status: frozenset[str]

    @property
    def held(self) -> bool:
        """True while the valve is held (``HLD``)."""
        return "HLD" in self.status


def apply_status(
    readings: dict[str, Reading],
    status: Iterable[str],
    bad_status: frozenset[str],
    stamper: Stamper,
    stamp: Stamp,
) -> dict[str, Reading]:
    """Replace readings invalidated by status codes with BAD ``status: ...`` readings."""
    result = dict(readings)
    for code in sorted(status):
        if code not in bad_status:
            continue
        reason = f"status: {code} ({STATUS_TEXT.get(code, 'device status')})"
        for field in STATUS_EFFECTS.get(code, ()):
            if result[field].trusted:
                result[field] = stamper.bad(result[field].unit, reason, at=stamp)
    return result


def all_bad(stamper: Stamper, reason: str) -> AlicatSample:
    """A sample whose readings are all BAD with ``reason``."""
    stamp = stamper.now()
    return AlicatSample(
        pressure_psia=stamper.bad(PSIA, reason, at=stamp),
        temp_c=stamper.bad(DEG_C, reason, at=stamp),
        vol_flow_lpm=stamper.bad(LPM, reason, at=stamp),
        flow_lpm=stamper.bad(LPM, reason, at=stamp),
        setpoint_lpm=stamper.bad(LPM, reason, at=stamp),
        gas=None,
        status=frozenset(),
    )


def check_gas(
    sample: AlicatSample, expected: str | None, stamper: Stamper, where: str
) -> AlicatSample:
    """``sample`` with its flows BAD (``gas_mismatch``) when it reports another gas than expected.

    A controller calibrated for air but fed CO2 reports a wrong flow: the value is not trusted.
    """
    if expected is None or sample.gas == expected:
        return sample
    reason = f"gas_mismatch: {where} reports gas {sample.gas}, the site file states {expected}"

    def mark(reading: Reading) -> Reading:
        if not reading.trusted:
            return reading  # already BAD for its own reason
        return stamper.bad(reading.unit, reason, at=Stamp(reading.monotonic_s, reading.utc))

    return dataclasses.replace(
        sample,
        flow_lpm=mark(sample.flow_lpm),
        vol_flow_lpm=mark(sample.vol_flow_lpm),
        setpoint_lpm=mark(sample.setpoint_lpm),
    )


class _GasOps(Protocol):
    name: str
    full_scale_lpm: float

    @property
    def where(self) -> str: ...

    async def read_gas(self) -> GasReport: ...

    async def select_gas(self, gas: int | str) -> None: ...


async def ensure_gas(mfc: _GasOps, gas: str, *, select: bool) -> GasCheck:
    """Read the gas, select ``gas`` if it differs and ``select`` allows, verify by read-back.

    Never raises for device faults: the :class:`~drivers.base.GasCheck` carries the reason.

    Raises:
        ValueError: Unknown gas name.
    """
    wanted = gas_name(gas)

    def result(
        found: str | None, report: GasReport | None, selected: bool, reason: str
    ) -> GasCheck:
        return GasCheck(
            device=mfc.name,
            where=mfc.where,
            requested=wanted,
            found=found,
            reported=report.gas if report else None,
            selected=selected,
            full_scale_lpm=report.full_scale_lpm if report else None,
            configured_full_scale_lpm=mfc.full_scale_lpm,
            reason=reason,
        )

    try:
        before = await mfc.read_gas()
    except Exception as exc:
        return result(None, None, False, as_driver_error(exc, mfc.where).reason)
    if before.gas == wanted:
        return result(before.gas, before, False, _full_scale_reason(mfc, before))
    if not select:
        return result(
            before.gas,
            before,
            False,
            f"gas_mismatch: {mfc.where} reports gas {before.gas}, the site file states "
            f"{wanted} (gas_select = 'verify': not changed)",
        )
    try:
        await mfc.select_gas(wanted)
    except DeviceTimeoutError as exc:
        return result(
            before.gas,
            before,
            True,
            f"gas_select_refused: {mfc.where} did not answer the select command for {wanted} "
            f"(it may lack gas selection; {exc.message}); it reports {before.gas}",
        )
    except ProtocolError as exc:
        return result(
            before.gas,
            before,
            True,
            f"gas_select_refused: {mfc.where} refused to select {wanted} ({exc.message}); "
            f"it reports {before.gas}",
        )
    except WriteVerifyError:
        pass  # the read-back below says what it runs on now
    except Exception as exc:
        return result(before.gas, before, True, as_driver_error(exc, mfc.where).reason)
    try:
        after = await mfc.read_gas()
    except Exception as exc:
        return result(before.gas, None, True, as_driver_error(exc, mfc.where).reason)
    if after.gas != wanted:
        return result(
            before.gas,
            after,
            True,
            f"gas_mismatch: {mfc.where} still reports gas {after.gas} after selecting {wanted}",
        )
    return result(before.gas, after, True, _full_scale_reason(mfc, after))


def _full_scale_reason(mfc: _GasOps, report: GasReport) -> str:
    reported = report.full_scale_lpm
    configured = mfc.full_scale_lpm
    if reported is None or not math.isfinite(reported):
        return ""
    if abs(reported - configured) <= FULL_SCALE_TOLERANCE * configured:
        return ""
    return (
        f"full_scale_mismatch: {mfc.where} reports full scale {reported:g} L/min on "
        f"{report.gas}, the site file states {configured:g} L/min"
    )


class AlicatMixerFields(BaseModel):
    """What every Alicat entry of a site file states, whatever its transport.

    Attributes:
        role: The mixer role it serves (``n2_mixer`` …).
        full_scale_lpm: Full scale, standard L/min.
        gas: Alicat short gas name (``CO2``); default: the role's gas.
        gas_select: ``select`` the gas at start where the instrument allows it, or only
            ``verify`` it.
    """

    role: MixerRole
    full_scale_lpm: float = Field(gt=0, le=10_000)
    gas: str | None = Field(default=None, description="Alicat short gas name, e.g. 'CO2'")
    gas_select: Literal["select", "verify"] = "select"

    @field_validator("gas")
    @classmethod
    def _known_gas(cls, value: str | None) -> str | None:
        return None if value is None else gas_name(value)

    def expected_gas(self) -> str:
        """The gas it must run on: ``gas``, else the role's default."""
        return role_gas(self.gas, self.role)
