"""SST Sensing LuminOx optical O2 sensor (LOX-02: ppO2, O2 %, temperature, pressure).

Reference: docs/protocols.md §1.1; SST datasheet DS0030
(https://sstsensing.com/wp-content/uploads/2021/08/DS0030rev15_LuminOx.pdf) and the PST Python
library. UART 9600 8N1, commands and replies end in CR LF, fields separated by single spaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import ProtocolError, as_driver_error
from drivers.quality import Stamp, Stamper, ValidRange, aged
from drivers.reading import Reading
from drivers.registry import OnLine, RoleSet, Transports
from drivers.transport.serial_line import Line, SerialLine, first_line_wait_s
from drivers.units import DEG_C, MBAR, PCT

ERROR_CODES = {
    "00": "USART receiver overflow",
    "01": "invalid command",
    "02": "invalid frame",
    "03": "invalid argument",
}
"""LuminOx ``E 0x`` error replies."""

_FIELD_RE = {
    "O": re.compile(r"\d{4}\.\d"),
    "T": re.compile(r"[+-]\d{2}\.\d"),
    "P": re.compile(r"\d{4}"),
    "%": re.compile(r"\d{3}\.\d{2}"),
    "e": re.compile(r"\d{4}"),
}
_DASHES = re.compile(r"-+")
LOX02_O2_RANGE = ValidRange(0.0, 25.0)
"""Measurement range of the LOX-02 O2 % output, vol-%."""


@dataclass(frozen=True, slots=True)
class LuminOxSample:
    """One full LuminOx report.

    Attributes:
        o2_pct: O2 concentration, vol-% (LOX-02 only; BAD on LOX-01).
        ppo2_mbar: O2 partial pressure, mbar.
        temp_c: Sensor-internal temperature, degC (not the culture temperature).
        pressure_mbar: Barometric pressure, mbar (BAD when no barometer is fitted).
        status: Raw ``e`` status field (``"0000"`` is healthy), or ``None`` if absent.
    """

    o2_pct: Reading
    ppo2_mbar: Reading
    temp_c: Reading
    pressure_mbar: Reading
    status: str | None


def parse_line(
    text: str,
    stamp: Stamp,
    stamper: Stamper,
    o2_range: ValidRange = LOX02_O2_RANGE,
    *,
    where: str = "",
) -> LuminOxSample:
    """Parse a stream or ``A`` reply line, e.g. ``O 0213.1 T +19.3 P 1010 % 020.92 e 0000``.

    Garbled lines give an all-BAD sample (``protocol_error``); dashes give BAD ``not_available``
    for that field; ``e`` other than ``0000`` makes every field BAD (``status``). ``where``
    (``"o2-luminox on line o2-uart"``) prefixes the messages.
    """
    at = f"{where}: " if where else ""
    fields: dict[str, str] = {}
    tokens = text.split()
    error = ""
    if len(tokens) % 2 or not tokens:
        error = "odd number of tokens"
    for key, value in zip(tokens[::2], tokens[1::2], strict=False):
        if key not in _FIELD_RE or key in fields:
            error = f"unexpected key {key!r}"
            break
        if not (_FIELD_RE[key].fullmatch(value) or _DASHES.fullmatch(value)):
            error = f"bad {key} field {value!r}"
            break
        fields[key] = value
    if not error and "O" not in fields:
        error = "no O field"
    if error:
        reason = f"protocol_error: {at}{error} in {text!r}"
        return _bad_sample(stamper, reason, stamp)

    status = fields.get("e")
    status_reason = f"status: {at}sensor error e {status}" if status not in (None, "0000") else ""

    def field(key: str, unit: str, valid: ValidRange) -> Reading:
        raw = fields.get(key)
        if status_reason:
            return stamper.bad(unit, status_reason, at=stamp)
        if raw is None:
            return stamper.bad(unit, f"not_available: {at}no {key} field", at=stamp)
        if _DASHES.fullmatch(raw):
            return stamper.bad(unit, f"not_available: {at}{key} field is dashes", at=stamp)
        return stamper.value(float(raw), unit, valid, at=stamp)

    return LuminOxSample(
        o2_pct=field("%", PCT, o2_range),
        ppo2_mbar=field("O", MBAR, ValidRange(0.0, 300.0)),
        temp_c=field("T", DEG_C, ValidRange(-30.0, 60.0)),
        pressure_mbar=field("P", MBAR, ValidRange(500.0, 1200.0)),
        status=status,
    )


def _is_report(text: str) -> bool:
    return text.startswith(("O ", "E "))


class LuminOx:
    """SST LuminOx O2 sensor on an ASCII serial line (LOX-02; LOX-01 gives BAD ``o2_pct``).

    Reference: SST DS0030 datasheet and docs/protocols.md §1.1.

    In ``"poll"`` mode every :meth:`read` sends ``A`` and parses the reply. In ``"stream"`` mode
    the sensor pushes a line about once per second; :meth:`read` returns the newest line, STALE
    when it is older than ``max_age_s``. The first read after :meth:`start` waits for the first
    line up to :func:`first_line_wait_s` (one stream period plus margin) instead of reporting
    BAD at once. After the line reconnects, the mode is set again.

    Args:
        line: The serial line (9600 8N1, ``eol`` CR LF).
        name: Label used in reasons and logs.
        mode: ``"poll"`` (recommended for control) or ``"stream"`` (factory default).
        clock: Time source.
        max_age_s: Oldest acceptable stream line, seconds.
        o2_range_pct: Valid O2 range, vol-% (LOX-02 measures 0-25 %).
        stream_period_s: Interval of stream lines, seconds (about 1 s on the LuminOx).
    """

    def __init__(
        self,
        line: SerialLine,
        *,
        name: str = "luminox",
        mode: Literal["poll", "stream"] = "poll",
        clock: Clock = DEFAULT_CLOCK,
        max_age_s: float = 3.0,
        o2_range_pct: tuple[float, float] = (0.0, 25.0),
        stream_period_s: float = 1.0,
    ) -> None:
        if not stream_period_s > 0:
            raise ValueError("stream_period_s must be > 0")
        self.line = line
        self.name = name
        self.mode = mode
        self.max_age_s = max_age_s
        self.stream_period_s = stream_period_s
        self._stamper = Stamper(clock)
        self._o2_range = ValidRange(*o2_range_pct)
        self._started_generation = -1
        self._latest: LuminOxSample | None = None
        self._latest_polled: LuminOxSample | None = None
        self._first_line = asyncio.Event()
        self._first_line_deadline = 0.0
        self._unsubscribe = line.subscribe(self._on_line) if mode == "stream" else None

    @property
    def where(self) -> str:
        """``"o2-luminox on line o2-uart"``."""
        return f"{self.name} on {self.line.label}"

    async def start(self) -> None:
        """Open the line if needed and set the output mode (``M 0`` stream / ``M 1`` poll).

        Raises:
            DriverError: The sensor did not acknowledge the mode (timeout, ``E 0x`` reply).
        """
        await self.line.ensure_open()
        digit = "0" if self.mode == "stream" else "1"
        reply = await self.line.request(f"M {digit}", lambda t: t.startswith(("M ", "E ")))
        _raise_if_error(reply.text, self.where)
        if reply.text.strip() != f"M 0{digit}":
            raise ProtocolError(f"{self.where}: mode echo {reply.text!r}, expected 'M 0{digit}'")
        self._started_generation = self.line.generation
        loop = asyncio.get_running_loop()
        self._first_line_deadline = loop.time() + first_line_wait_s(self.stream_period_s)

    async def close(self) -> None:
        """Stop listening to stream lines (the line itself is owned by the caller)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def read(self) -> LuminOxSample:
        """Newest full sample; never raises (BAD/STALE readings instead).

        In stream mode, a read before the first line waits for it until one stream period plus
        margin after :meth:`start`.
        """
        try:
            if self._started_generation != self.line.generation or not self.line.connected:
                await self.start()
            if self.mode == "poll":
                reply = await self.line.request("A", _is_report)
                _raise_if_error(reply.text, self.where)
                self._latest_polled = self._parse(reply)
                return self._latest_polled
            if self._latest is None:
                await self._wait_first_line()
        except Exception as exc:
            return self._all_bad(as_driver_error(exc, self.where).reason)
        if self._latest is None:
            return self._all_bad(
                f"timeout: no stream line from {self.where} within "
                f"{first_line_wait_s(self.stream_period_s):g} s of start "
                f"(stream period {self.stream_period_s:g} s)"
            )
        return self._aged(self._latest)

    async def _wait_first_line(self) -> None:
        remaining = self._first_line_deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._first_line.wait()

    async def read_o2_pct(self) -> Reading:
        """O2 concentration, vol-% (0-25 on LOX-02)."""
        return (await self.read()).o2_pct

    async def read_pressure_mbar(self) -> Reading:
        """Barometric pressure of the newest sample already received, mbar (LOX-02's barometer).

        No transaction of its own: the pressure comes with every O2 report, so this returns the
        one the O2 read of this (or, polled, the previous) cycle brought; STALE past
        ``max_age_s``, BAD before any report or without a barometer.
        """
        sample = self._latest if self.mode == "stream" else self._latest_polled
        if sample is None:
            return self._stamper.bad(MBAR, f"not_available: {self.where}: no report yet")
        return aged(sample.pressure_mbar, self._stamper.clock.monotonic(), self.max_age_s)

    async def read_all(self) -> dict[str, Reading]:
        """Every field of one sample (``hypoxia devices read``, calibration in room air).

        O2 %, ppO2 (mbar), sensor temperature (degC), barometric pressure (mbar; BAD without one).
        """
        sample = await self.read()
        return {
            "o2_pct": sample.o2_pct,
            "ppo2_mbar": sample.ppo2_mbar,
            "temp_c": sample.temp_c,
            "pressure_mbar": sample.pressure_mbar,
        }

    def _on_line(self, line: Line) -> None:
        if line.text.startswith("O "):
            self._latest = self._parse(line)
            self._first_line.set()

    def _parse(self, line: Line) -> LuminOxSample:
        stamp = Stamp(line.monotonic_s, line.utc)
        return parse_line(line.text, stamp, self._stamper, self._o2_range, where=self.where)

    def _aged(self, sample: LuminOxSample) -> LuminOxSample:
        now = self._stamper.clock.monotonic()
        return LuminOxSample(
            o2_pct=aged(sample.o2_pct, now, self.max_age_s),
            ppo2_mbar=aged(sample.ppo2_mbar, now, self.max_age_s),
            temp_c=aged(sample.temp_c, now, self.max_age_s),
            pressure_mbar=aged(sample.pressure_mbar, now, self.max_age_s),
            status=sample.status,
        )

    def _all_bad(self, reason: str) -> LuminOxSample:
        return _bad_sample(self._stamper, reason, self._stamper.now())


def _bad_sample(stamper: Stamper, reason: str, stamp: Stamp) -> LuminOxSample:
    return LuminOxSample(
        o2_pct=stamper.bad(PCT, reason, at=stamp),
        ppo2_mbar=stamper.bad(MBAR, reason, at=stamp),
        temp_c=stamper.bad(DEG_C, reason, at=stamp),
        pressure_mbar=stamper.bad(MBAR, reason, at=stamp),
        status=None,
    )


def _raise_if_error(text: str, where: str) -> None:
    if text.startswith("E "):
        code = text[2:].strip()
        raise ProtocolError(f"{where}: device error E {code} ({ERROR_CODES.get(code, 'unknown')})")


class LuminOxConfig(OnLine):
    """SST LuminOx O2 sensor (ASCII)."""

    driver: Literal["luminox"]
    role: Literal["o2", "o2_secondary"] = "o2"
    mode: Literal["poll", "stream"] = "poll"
    max_age_s: float = Field(default=3.0, gt=0, le=600)
    stream_period_s: float = Field(
        default=1.0, gt=0, le=60, description="interval of stream lines, seconds"
    )
    barometer: bool = Field(
        default=False,
        description="also serve the 'pressure' role (mbar) from the LOX-02's barometer: the"
        " pericellular O2 estimate then uses the measured site pressure (docs/physics.md §B7)",
    )

    def served_roles(self) -> list[str]:
        """Its O2 role, and ``pressure`` with ``barometer = true``."""
        return [self.role, "pressure"] if self.barometer else [self.role]

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> LuminOx:
        """A :class:`LuminOx` on its line, read for the O2 role."""
        lox = LuminOx(
            self.serial_line(transports),
            name=self.name,
            mode=self.mode,
            clock=clock,
            max_age_s=self.max_age_s,
            stream_period_s=self.stream_period_s,
        )
        roles.readers[self.role] = lox.read_o2_pct
        if self.barometer:
            roles.readers["pressure"] = lox.read_pressure_mbar
        return lox
