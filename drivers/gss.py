"""Gas Sensing Solutions SprintIR / ExplorIR / CozIR NDIR CO2 sensors (UART ASCII).

Reference: docs/protocols.md §2.2; GSS user's manual (https://manualzilla.com/doc/5784221/gss-sensor-user-s-manual)
and RobTillaart/Cozir. 9600 8N1, commands end in CR LF, replies ``<letter> <5 digits>`` (some
firmware prefixes a space). CO2 ppm = count x multiplier, the multiplier (``.`` command) being 1,
10 or 100 depending on the sensor's range.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Literal

from pydantic import Field

from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import ProtocolError, as_driver_error
from drivers.quality import Stamp, Stamper, ValidRange, aged
from drivers.reading import Reading
from drivers.registry import OnLine, RoleSet, Transports
from drivers.transport.serial_line import Line, LineMatcher, SerialLine, first_line_wait_s
from drivers.units import PCT, PPM_PER_PCT

VALID_MULTIPLIERS = (1, 10, 100)
_COUNT = re.compile(r"\d{5}")


def _starts(letter: str) -> LineMatcher:
    def match(text: str) -> bool:
        stripped = text.strip()
        return stripped.startswith(letter) or stripped == "?"

    return match


def parse_fields(text: str) -> dict[str, int]:
    """Parse ``Z 00412 z 00409`` into ``{"Z": 412, "z": 409}``.

    Raises:
        ProtocolError: ``?`` reply, odd token count or a value that is not five digits.
    """
    stripped = text.strip()
    if stripped == "?":
        raise ProtocolError("device replied '?' (command not understood)")
    tokens = stripped.split()
    if not tokens or len(tokens) % 2:
        raise ProtocolError(f"unparseable line {text!r}")
    fields: dict[str, int] = {}
    for key, value in zip(tokens[::2], tokens[1::2], strict=True):
        if not _COUNT.fullmatch(value):
            raise ProtocolError(f"bad {key} field {value!r} in {text!r}")
        fields[key] = int(value)
    return fields


class GssCO2:
    """GSS SprintIR / ExplorIR CO2 sensor on an ASCII serial line.

    Reference: GSS user's manual and docs/protocols.md §2.2.

    :meth:`start` selects polling (``K 2``) or streaming (``K 1``) and reads the multiplier
    (``.``). Readings use the *filtered* value ``Z``. In stream mode the first read after
    :meth:`start` waits for the first line up to one stream period plus margin.

    Args:
        line: The serial line (9600 8N1, ``eol`` CR LF).
        name: Label used in reasons and logs.
        mode: ``"poll"`` or ``"stream"`` (SprintIR streams at 20 Hz).
        clock: Time source.
        expected_multiplier: If set, :meth:`start` fails unless the sensor reports this
            multiplier -- guards against a swapped sensor with a different range.
        range_pct: Valid CO2 range, vol-% (e.g. 0-20 for a 20 % SprintIR).
        max_age_s: Oldest acceptable stream line, seconds.
        stream_period_s: Interval of stream lines, seconds (SprintIR 0.05, CozIR 0.5).
    """

    def __init__(
        self,
        line: SerialLine,
        *,
        name: str = "gss-co2",
        mode: Literal["poll", "stream"] = "poll",
        clock: Clock = DEFAULT_CLOCK,
        expected_multiplier: int | None = None,
        range_pct: tuple[float, float] = (0.0, 20.0),
        max_age_s: float = 1.0,
        stream_period_s: float = 0.5,
    ) -> None:
        if expected_multiplier is not None and expected_multiplier not in VALID_MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {VALID_MULTIPLIERS}")
        if not stream_period_s > 0:
            raise ValueError("stream_period_s must be > 0")
        self.line = line
        self.name = name
        self.mode = mode
        self.expected_multiplier = expected_multiplier
        self.max_age_s = max_age_s
        self.stream_period_s = stream_period_s
        self.multiplier: int | None = None
        self._stamper = Stamper(clock)
        self._range = ValidRange(*range_pct)
        self._started_generation = -1
        self._latest: Reading | None = None
        self._first_line = asyncio.Event()
        self._first_line_deadline = 0.0
        self._unsubscribe = line.subscribe(self._on_line) if mode == "stream" else None

    @property
    def where(self) -> str:
        """``"co2-sprintir on line co2-uart"``."""
        return f"{self.name} on {self.line.label}"

    async def start(self) -> None:
        """Set the output mode and read the multiplier.

        Raises:
            DriverError: No acknowledgement, ``?`` reply, or an unexpected multiplier.
        """
        await self.line.ensure_open()
        try:
            await self._start()
        except ProtocolError as exc:
            raise ProtocolError(f"{self.where}: {exc.message}") from exc
        loop = asyncio.get_running_loop()
        self._first_line_deadline = loop.time() + first_line_wait_s(self.stream_period_s)

    async def _start(self) -> None:
        mode = 1 if self.mode == "stream" else 2
        reply = await self.line.request(f"K {mode}", _starts("K"))
        if parse_fields(reply.text).get("K") != mode:
            raise ProtocolError(f"mode reply {reply.text!r}, expected K {mode:05d}")
        reply = await self.line.request(".", _starts("."))
        multiplier = parse_fields(reply.text).get(".")
        if multiplier not in VALID_MULTIPLIERS:
            raise ProtocolError(f"multiplier {multiplier} not in {VALID_MULTIPLIERS}")
        if self.expected_multiplier is not None and multiplier != self.expected_multiplier:
            raise ProtocolError(
                f"multiplier {multiplier}, expected {self.expected_multiplier} "
                "(wrong sensor range?)"
            )
        self.multiplier = multiplier
        self._started_generation = self.line.generation

    async def close(self) -> None:
        """Stop listening to stream lines (the line itself is owned by the caller)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def read_co2_pct(self) -> Reading:
        """Filtered CO2, vol-%; BAD on timeout/garbage/out of range, STALE if the stream stops.

        Never raises. In stream mode, a read before the first line waits for it until one
        stream period plus margin after :meth:`start`.
        """
        try:
            if self._started_generation != self.line.generation or not self.line.connected:
                await self.start()
            if self.mode == "poll":
                reply = await self.line.request("Z", _starts("Z"))
                return self._convert(reply)
            if self._latest is None:
                await self._wait_first_line()
        except Exception as exc:
            return self._stamper.failed(PCT, as_driver_error(exc, self.where))
        if self._latest is None:
            return self._stamper.bad(
                PCT,
                f"timeout: no stream line from {self.where} within "
                f"{first_line_wait_s(self.stream_period_s):g} s of start "
                f"(stream period {self.stream_period_s:g} s)",
            )
        return aged(self._latest, self._stamper.clock.monotonic(), self.max_age_s)

    async def _wait_first_line(self) -> None:
        remaining = self._first_line_deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._first_line.wait()

    async def read_all(self) -> dict[str, Reading]:
        """The filtered CO2 (``hypoxia devices read``)."""
        return {"co2_pct": await self.read_co2_pct()}

    def _on_line(self, line: Line) -> None:
        if line.text.strip().startswith("Z") and self.multiplier is not None:
            self._latest = self._convert(line)
            self._first_line.set()

    def _convert(self, line: Line) -> Reading:
        stamp = Stamp(line.monotonic_s, line.utc)
        try:
            count = parse_fields(line.text).get("Z")
        except ProtocolError as exc:
            return self._stamper.bad(PCT, f"protocol_error: {self.where}: {exc.message}", at=stamp)
        if count is None or self.multiplier is None:
            return self._stamper.bad(
                PCT, f"protocol_error: {self.where}: no Z field in {line.text!r}", at=stamp
            )
        ppm = count * self.multiplier
        return self._stamper.value(ppm / PPM_PER_PCT, PCT, self._range, at=stamp)


class GssConfig(OnLine):
    """GSS SprintIR / ExplorIR CO2 sensor (ASCII)."""

    driver: Literal["gss_co2"]
    role: Literal["co2", "co2_secondary"] = "co2"
    mode: Literal["poll", "stream"] = "poll"
    expected_multiplier: int | None = Field(default=None, ge=1, le=1000)
    stream_period_s: float = Field(
        default=0.5, gt=0, le=60, description="interval of stream lines, seconds"
    )

    def open(self, transports: Transports, clock: Clock, roles: RoleSet) -> GssCO2:
        """A :class:`GssCO2` on its line, read for the CO2 role."""
        gss = GssCO2(
            self.serial_line(transports),
            name=self.name,
            mode=self.mode,
            clock=clock,
            expected_multiplier=self.expected_multiplier,
            stream_period_s=self.stream_period_s,
        )
        roles.readers[self.role] = gss.read_co2_pct
        return gss
