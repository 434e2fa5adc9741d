"""What the Alicat ASCII and Modbus drivers share: gas table, status codes, units, sample type.

Reference: docs/protocols.md §4.1-4.2; Alicat Serial Primer (gas numbers, App. C) and the
2023 "Standard Devices" manual (status flags).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from drivers.quality import Stamp, Stamper
from drivers.reading import Reading
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
