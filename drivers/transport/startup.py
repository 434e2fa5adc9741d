"""Opening buses and lines: start-up retries, the run-time reconnect deadline, and why not open.

Both transports (:class:`~drivers.transport.modbus.ModbusHub`,
:class:`~drivers.transport.serial_line.SerialLine`) hand their ``_open_once`` to one
:class:`OpenTracker`, which

* **remembers why** the transport is not open: the first and the latest failure (keyword,
  message, UTC) and the failed attempts since it was last open (:meth:`OpenTracker.state`,
  shown by ``hypoxia devices read`` and logged by the service);
* runs the **start-up wait** (:meth:`OpenTracker.start`): retries that sleep, with their own
  short doubling delay (0.05 s up to 2 s, 10 % jitter), for a gateway or simulator that may still
  be booting. These attempts do **not** count toward the reconnect back-off: when start-up gives
  up, the first run-time attempt comes after ``reconnect_initial_s``, not after the maximum;
* gates **run-time reopens** (:meth:`OpenTracker.reopen`) by the deadline back-off of
  :class:`common.backoff.Backoff`: a control cycle never sleeps waiting for a bus.

Logging: every line starts with the transport's label (``bus rs485-gw``, ``line o2-uart``).
Start-up logs one warning per transport that is still not open when its wait ends, naming the
cause; run time logs a warning when a transport fails to reopen for a new cause and an info
line when it is open again; single attempts log at debug level only.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from common.backoff import Backoff, doubling_delay_s
from common.clock import Clock
from drivers.errors import BusDisconnectedError, OpenFailedError, TransportError, as_driver_error

_LOG = logging.getLogger(__name__)

STARTUP_DELAY_INITIAL_S = 0.05
"""First sleep between start-up attempts, seconds."""
STARTUP_DELAY_MAX_S = 2.0
"""Largest sleep between start-up attempts, seconds."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed open.

    Attributes:
        keyword: The cause's reason keyword (``port_not_found``, ``connection_refused`` ...).
        message: What happened, naming the transport and its port.
        utc: When it happened.
    """

    keyword: str
    message: str
    utc: datetime

    @property
    def reason(self) -> str:
        """``"<keyword>: <message>"``."""
        return f"{self.keyword}: {self.message}"


@dataclass(frozen=True, slots=True)
class TransportState:
    """Whether a bus or line is open, and if not, why (``hypoxia devices read``, service log).

    Attributes:
        label: ``"bus rs485-gw"`` or ``"line o2-uart"``.
        port: Where it points (device path, URL or ``host:port``).
        connected: Open now.
        failed_attempts: Failed opens since it was last open (start-up ones included).
        first_failure: The first of those failures (``None`` while open).
        latest_failure: The most recent one.
        next_attempt_s: Seconds until the next run-time attempt is allowed (0 when allowed).
    """

    label: str
    port: str
    connected: bool
    failed_attempts: int
    first_failure: Failure | None
    latest_failure: Failure | None
    next_attempt_s: float

    @property
    def keyword(self) -> str:
        """The latest failure's keyword; ``""`` when open or never tried."""
        return self.latest_failure.keyword if self.latest_failure else ""

    def describe(self) -> str:
        """One line: ``"open"`` or the cause, the attempts and the first cause if different."""
        if self.connected:
            return "open"
        latest, first = self.latest_failure, self.first_failure
        if latest is None or first is None:
            return "not open (not tried yet)"
        text = (
            f"not open: {latest.reason} ({_attempts(self.failed_attempts)} since "
            f"{first.utc:%Y-%m-%d %H:%M:%S} UTC"
        )
        if first.keyword != latest.keyword or first.message != latest.message:
            text += f"; first: {first.reason}"
        return text + f"); next attempt in {self.next_attempt_s:.1f} s"


def _attempts(count: int) -> str:
    return f"{count} failed attempt" + ("" if count == 1 else "s")


class OpenTracker:
    """Start-up wait, run-time reconnect deadline and the memory of why a transport is down.

    Args:
        label: ``"bus NAME"`` or ``"line NAME"`` (every log line starts with it).
        port: Where the transport points, for :class:`TransportState`.
        clock: Time source of the reconnect deadline and the failure timestamps.
        reconnect_initial_s: First run-time reconnect delay, seconds.
        reconnect_max_s: Largest run-time reconnect delay, seconds.
        logger: Where to log (the transport module's logger).
    """

    def __init__(
        self,
        label: str,
        port: str,
        clock: Clock,
        reconnect_initial_s: float,
        reconnect_max_s: float,
        logger: logging.Logger = _LOG,
    ) -> None:
        self.label = label
        self.port = port
        self.clock = clock
        self.reconnect = Backoff(
            clock, reconnect_initial_s, max(reconnect_max_s, reconnect_initial_s)
        )
        self.failed_attempts = 0
        self.first_failure: Failure | None = None
        self.latest_failure: Failure | None = None
        self._log = logger

    def state(self, connected: bool) -> TransportState:
        """The transport's state for display (``connected`` comes from the transport)."""
        return TransportState(
            self.label,
            self.port,
            connected,
            self.failed_attempts,
            None if connected else self.first_failure,
            None if connected else self.latest_failure,
            0.0 if connected else self.reconnect.remaining_s(),
        )

    def not_open(self) -> BusDisconnectedError:
        """The error of a request while the reconnect deadline has not passed.

        Its keyword is the latest failure's (``port_not_found`` ...), ``disconnected`` if none.
        """
        wait = f"next attempt in {self.reconnect.remaining_s():.1f} s"
        latest, first = self.latest_failure, self.first_failure
        if latest is None or first is None:
            return BusDisconnectedError(f"{self.label} not open; {wait}")
        text = f"{latest.message} ({_attempts(self.failed_attempts)} since "
        text += f"{first.utc:%H:%M:%S} UTC"
        if first.keyword != latest.keyword:
            text += f"; first: {first.reason}"
        return BusDisconnectedError(f"{text}); {wait}", keyword=latest.keyword)

    def _record(self, error: TransportError) -> bool:
        """Remember a failure; True when its cause differs from the previous one."""
        failure = Failure(error.keyword, error.message, self.clock.utc())
        new_cause = self.latest_failure is None or self.latest_failure.keyword != error.keyword
        if self.first_failure is None:
            self.first_failure = failure
        self.latest_failure = failure
        self.failed_attempts += 1
        return new_cause

    def _succeeded(self, context: str) -> None:
        if self.failed_attempts:
            first = self.first_failure
            self._log.info(
                "%s: open %s after %d failed attempts (first: %s)",
                self.label,
                context,
                self.failed_attempts,
                first.reason if first else "?",
            )
        self.reconnect.succeeded()
        self.failed_attempts = 0
        self.first_failure = self.latest_failure = None

    async def _attempt(self, open_once: Callable[[], Awaitable[None]]) -> TransportError | None:
        try:
            await open_once()
        except TransportError as exc:
            return exc
        except Exception as exc:  # a bug in an opener must not hide the transport's state
            error = as_driver_error(exc, self.label)
            return OpenFailedError("open_failed", error.message)
        return None

    async def start(self, open_once: Callable[[], Awaitable[None]], wait_s: float) -> None:
        """Open now; with ``wait_s`` > 0 keep trying (sleeping) that long -- start-up only.

        Start-up attempts do not advance the reconnect back-off; when the wait ends without
        success, the first run-time attempt is allowed ``reconnect_initial_s`` later.

        Raises:
            BusDisconnectedError: Not open within ``wait_s``: the latest attempt's error, its
                keyword naming the cause (an :class:`~drivers.errors.OpenFailedError`, or a
                :class:`~drivers.errors.LineSettingRefusedError` naming the setting).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + max(wait_s, 0.0)
        attempts = 0
        while True:
            attempts += 1
            error = await self._attempt(open_once)
            if error is None:
                self._succeeded("at start-up")
                return
            self._record(error)
            self._log.debug(
                "%s: start-up attempt %d failed: %s", self.label, attempts, error.reason
            )
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            delay = doubling_delay_s(attempts, STARTUP_DELAY_INITIAL_S, STARTUP_DELAY_MAX_S)
            await asyncio.sleep(min(delay * (1.0 + 0.1 * random.random()), remaining))
        self.reconnect.succeeded()
        self.reconnect.failed()  # the first run-time attempt after the initial delay
        first = self.first_failure
        self._log.warning(
            "%s: not open after %.1f s (%s): %s%s; retrying from %.1f s on",
            self.label,
            loop.time() - started,
            _attempts(attempts),
            error.reason,
            f" (first: {first.reason})" if first and first.keyword != error.keyword else "",
            self.reconnect.initial_s,
        )
        raise error

    async def reopen(self, open_once: Callable[[], Awaitable[None]]) -> None:
        """One run-time attempt (call it only when ``reconnect.ready()``).

        Raises:
            BusDisconnectedError: It failed; the reconnect deadline moves on.
        """
        error = await self._attempt(open_once)
        if error is None:
            self._succeeded("again")
            return
        new_cause = self._record(error)
        delay = self.reconnect.failed()
        level = logging.WARNING if new_cause else logging.DEBUG
        self._log.log(
            level, "%s: reopen failed: %s; next attempt in %.1f s", self.label, error.reason, delay
        )
        raise self.not_open() from error
