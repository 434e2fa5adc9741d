"""Alicat mass-flow controller over the ASCII serial protocol (CR-terminated lines).

Reference: docs/protocols.md §4.1; Alicat serial tutorial
(https://www.alicat.com/knowledge-base/how-to-issue-serial-commands/) and the real poll capture
``A +014.62 +021.89 +000.00 +000.00 +078.95     N2`` (GraysonBellamy/alicatlib fixtures).
Default 19200 8N1, unit ids A-Z on one line, commands and replies end in CR only.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.alicat.common import (
    DEFAULT_BAD_STATUS,
    GAS_NUMBERS,
    LPM_PER_UNIT,
    AlicatMixerFields,
    AlicatSample,
    FlowUnit,
    all_bad,
    apply_status,
    check_gas,
    ensure_gas,
    gas_name,
    gas_number,
)
from drivers.base import GasCheck, GasReport
from drivers.errors import DriverError, ProtocolError, WriteVerifyError, as_driver_error
from drivers.quality import Stamp, Stamper, ValidRange
from drivers.reading import Reading
from drivers.registry import OnLine, RoleSet, Transports
from drivers.transport.serial_line import LineMatcher, SerialLine
from drivers.units import DEG_C, LPM, PSIA

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
FULL_SCALE_QUERY = "FPF 5"
"""Query the full scale of statistic 5 (mass flow), firmware 6v00 and later:
``A 5 5.0000 71 NLPM`` = unit id, statistic, value, unit code, unit label [unverified: one
community capture]."""
_LPM_PER_LABEL = {"SLPM": 1.0, "NLPM": 1.0, "SCCM": 0.001, "NCCM": 0.001}


def _decimals(token: str) -> int:
    return len(token.split(".", 1)[1]) if "." in token else 0


def parse_frame(
    text: str,
    unit_id: str,
    flow_unit: FlowUnit,
    stamper: Stamper,
    stamp: Stamp,
    *,
    full_scale_lpm: float = math.inf,
    bad_status: frozenset[str] = DEFAULT_BAD_STATUS,
) -> AlicatSample:
    """Parse a data frame: unit id, P (psia), T (degC), vol flow, mass flow, [setpoint], gas, codes.

    Controllers report 5 numbers, meters 4 (then ``setpoint_lpm`` is BAD). Flows are converted
    from the device unit to L/min.

    Raises:
        ProtocolError: ``?`` reply, wrong unit id or an unrecognised layout.
    """
    tokens = text.split()
    if not tokens or tokens[0] == "?" or tokens[1:2] == ["?"]:
        raise ProtocolError(f"device replied '?' ({text!r})")
    if tokens[0] != unit_id:
        raise ProtocolError(f"frame from unit {tokens[0]!r}, expected {unit_id!r}")
    numbers: list[str] = []
    rest = tokens[1:]
    while rest and _NUMBER.fullmatch(rest[0]):
        numbers.append(rest.pop(0))
    if len(numbers) not in (4, 5) or not rest:
        raise ProtocolError(f"unrecognised frame layout {text!r}")
    gas, codes = rest[0], frozenset(rest[1:])
    to_lpm = LPM_PER_UNIT[flow_unit]
    flow_valid = ValidRange(-0.05 * full_scale_lpm, 1.3 * full_scale_lpm)
    values = [float(n) for n in numbers]
    readings: dict[str, Reading] = {
        "pressure_psia": stamper.value(values[0], PSIA, ValidRange(0.0, 250.0), at=stamp),
        "temp_c": stamper.value(values[1], DEG_C, ValidRange(-30.0, 90.0), at=stamp),
        "vol_flow_lpm": stamper.value(values[2] * to_lpm, LPM, flow_valid, at=stamp),
        "flow_lpm": stamper.value(values[3] * to_lpm, LPM, flow_valid, at=stamp),
    }
    if len(values) == 5:
        sp_valid = ValidRange(0.0, full_scale_lpm * 1.0001)
        readings["setpoint_lpm"] = stamper.value(values[4] * to_lpm, LPM, sp_valid, at=stamp)
    else:
        readings["setpoint_lpm"] = stamper.bad(
            LPM, "not available: meter has no setpoint", at=stamp
        )
    readings = apply_status(readings, codes, bad_status, stamper, stamp)
    return AlicatSample(**readings, gas=gas, status=codes)


class AlicatSerial:
    """Alicat MC-series mass-flow controller on an ASCII serial line (CR framing).

    Reference: Alicat serial primer / tutorial, docs/protocols.md §4.1.

    Commands used: poll (``A``), setpoint (``AS <value>``), gas select (``AG <n>``), hold valve
    at current position (``AHP``), hold closed (``AHC``), cancel hold (``AC``), full scale
    (``AFPF 5``). Every command that changes the device returns a data frame, which is the
    read-back used for verification. With ``expected_gas`` set, a frame reporting another gas
    makes the flows BAD (``gas_mismatch``).

    Args:
        line: The serial line (19200 8N1, ``eol`` CR).
        unit_id: Unit id letter A-Z.
        full_scale_lpm: Full-scale mass flow, standard L/min (setpoints above are rejected).
        name: Label used in reasons and logs.
        flow_unit: The device's engineering flow unit (``"SLPM"`` or ``"SCCM"``).
        clock: Time source.
        bad_status: Status codes that make the affected readings BAD.
        verify_tolerance_fs: Allowed setpoint read-back error as a fraction of full scale.
        expected_gas: The gas it must run on (``"CO2"``); ``None`` skips the per-read check.
    """

    def __init__(
        self,
        line: SerialLine,
        unit_id: str = "A",
        *,
        full_scale_lpm: float,
        name: str = "alicat",
        flow_unit: FlowUnit = "SLPM",
        clock: Clock = DEFAULT_CLOCK,
        bad_status: frozenset[str] = DEFAULT_BAD_STATUS,
        verify_tolerance_fs: float = 0.001,
        expected_gas: str | None = None,
    ) -> None:
        if len(unit_id) != 1 or not unit_id.isalpha():
            raise ValueError("unit_id must be one letter A-Z")
        if not full_scale_lpm > 0:
            raise ValueError("full_scale_lpm must be > 0")
        self.line = line
        self.unit_id = unit_id.upper()
        self.full_scale_lpm = full_scale_lpm
        self.name = name
        self.flow_unit: FlowUnit = flow_unit
        self.bad_status = bad_status
        self.verify_tolerance_fs = verify_tolerance_fs
        self.expected_gas = None if expected_gas is None else gas_name(expected_gas)
        self._stamper = Stamper(clock)

    @property
    def where(self) -> str:
        """``"line mfc-rs232, unit B"``."""
        return f"{self.line.label}, unit {self.unit_id}"

    def _match(self) -> LineMatcher:
        uid = self.unit_id

        def match(text: str) -> bool:
            tokens = text.split()
            return bool(tokens) and tokens[0] in (uid, "?")

        return match

    async def _command(self, command: str) -> tuple[AlicatSample, str]:
        reply = await self.line.request(self.unit_id + command, self._match())
        try:
            sample = parse_frame(
                reply.text,
                self.unit_id,
                self.flow_unit,
                self._stamper,
                Stamp(reply.monotonic_s, reply.utc),
                full_scale_lpm=self.full_scale_lpm,
                bad_status=self.bad_status,
            )
        except ProtocolError as exc:
            raise ProtocolError(f"{self.name} ({self.where}): {exc.message}") from exc
        return sample, reply.text

    async def start(self) -> None:
        """Poll once to check the unit answers with a parseable frame.

        Raises:
            DriverError: No reply, ``?`` or unparseable frame.
        """
        await self.line.ensure_open()
        await self._command("")

    async def read(self) -> AlicatSample:
        """Poll the data frame; never raises (faults give BAD readings)."""
        try:
            sample, _ = await self._command("")
        except Exception as exc:
            error = as_driver_error(exc, f"{self.name} ({self.where})")
            return all_bad(self._stamper, error.reason)
        return check_gas(sample, self.expected_gas, self._stamper, f"{self.name} ({self.where})")

    async def read_flow_lpm(self) -> Reading:
        """Mass flow, standard L/min."""
        return (await self.read()).flow_lpm

    async def read_all(self) -> dict[str, Reading]:
        """The mass flow (``hypoxia devices read``)."""
        return {"flow_lpm": await self.read_flow_lpm()}

    async def set_flow_lpm(self, lpm: float) -> None:
        """Set the mass-flow setpoint and verify it in the returned frame.

        Args:
            lpm: Setpoint, standard L/min, 0..full scale.

        Raises:
            ValueError: Outside 0..full scale or not finite.
            WriteVerifyError: The frame's setpoint differs by more than the tolerance.
            DriverError: No reply, ``?`` reply or unparseable frame.
        """
        if not (math.isfinite(lpm) and 0.0 <= lpm <= self.full_scale_lpm):
            raise ValueError(f"setpoint {lpm!r} L/min outside 0..{self.full_scale_lpm:g}")
        value = round(lpm / LPM_PER_UNIT[self.flow_unit], 3)
        sample, text = await self._command(f"S {value:.3f}")
        sp = sample.setpoint_lpm.value
        sent_lpm = value * LPM_PER_UNIT[self.flow_unit]
        numbers = text.split()[1:6]
        # the frame shows the set point to its display resolution: a value sent with more
        # decimals can round by up to one display step
        resolution = 10.0 ** -_decimals(numbers[-1]) * LPM_PER_UNIT[self.flow_unit]
        tolerance = max(self.verify_tolerance_fs * self.full_scale_lpm, resolution)
        if not (math.isfinite(sp) and abs(sp - sent_lpm) <= tolerance):
            raise WriteVerifyError(self.name, "setpoint_lpm", lpm, sp)

    async def select_gas(self, gas: int | str) -> None:
        """Select the gas calibration (number or short name) and verify the frame's gas field.

        Raises:
            ValueError: Unknown gas.
            WriteVerifyError: The frame shows a different gas.
            DriverError: No reply, ``?`` reply or unparseable frame.
        """
        number = gas_number(gas)
        sample, _ = await self._command(f"G {number}")
        if sample.gas != GAS_NUMBERS[number]:
            raise WriteVerifyError(self.name, "gas", GAS_NUMBERS[number], sample.gas)

    async def read_gas(self) -> GasReport:
        """The gas of the data frame and the full scale from ``FPF 5`` (``None`` if unanswered).

        Raises:
            DriverError: The poll failed.
        """
        sample, _ = await self._command("")
        return GasReport(sample.gas, await self._full_scale_lpm())

    async def _full_scale_lpm(self) -> float | None:
        uid = self.unit_id
        try:
            reply = await self.line.request(uid + FULL_SCALE_QUERY, self._match())
        except DriverError:
            return None  # older firmware ignores the command
        tokens = reply.text.split()
        if len(tokens) < 4 or tokens[0] != uid or tokens[1] != "5":
            return None
        try:
            value = float(tokens[2])
        except ValueError:
            return None
        label = tokens[-1].upper()
        return value * _LPM_PER_LABEL.get(label, LPM_PER_UNIT[self.flow_unit])

    async def ensure_gas(self, gas: str, *, select: bool = True) -> GasCheck:
        """Run on ``gas``: select it (``G n``) if the data frame shows another gas.

        Reads the frame's gas, selects ``gas`` if different and ``select`` allows, verifies by
        polling again, and reports the full scale (``FPF 5``) too. Never raises for device
        faults: the check's ``reason`` says what is wrong (``gas_mismatch``,
        ``gas_select_refused``, ``full_scale_mismatch``, transport keywords).

        Raises:
            ValueError: Unknown gas name.
        """
        return await ensure_gas(self, gas, select=select)

    async def hold(self) -> None:
        """Hold the valve at its current position (``HP``); verified by ``HLD`` in the frame."""
        await self._expect_hold("HP", held=True)

    async def hold_closed(self) -> None:
        """Close the valve regardless of setpoint (``HC``); verified by ``HLD`` in the frame."""
        await self._expect_hold("HC", held=True)

    async def cancel_hold(self) -> None:
        """Cancel a valve hold (``C``); verified by the absence of ``HLD``."""
        await self._expect_hold("C", held=False)

    async def _expect_hold(self, command: str, *, held: bool) -> None:
        sample, _ = await self._command(command)
        if sample.held != held:
            raise WriteVerifyError(self.name, "valve hold", held, sample.held)


class AlicatSerialConfig(OnLine, AlicatMixerFields):
    """Alicat mass-flow controller over ASCII serial.

    ``gas`` is the gas it must run on (default from the role: n2_mixer N2, air_mixer Air,
    o2_mixer O2, co2_mixer CO2); ``gas_select = "select"`` lets the start-up check select it,
    ``"verify"`` only reports a mismatch.
    """

    driver: Literal["alicat_serial"]
    unit_id: str = Field(default="A", pattern=r"^[A-Z]$")

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> AlicatSerial:
        """An :class:`AlicatSerial` (one unit id on a shared line) serving its mixer role."""
        gas = self.expected_gas()
        mfc = AlicatSerial(
            self.serial_line(transports),
            self.unit_id,
            clock=clock,
            full_scale_lpm=self.full_scale_lpm,
            name=self.name,
            expected_gas=gas,
        )
        roles.mixers[self.role] = mfc
        roles.gas_checks[self.role] = functools.partial(
            mfc.ensure_gas, gas, select=self.gas_select == "select"
        )
        return mfc
