"""ASCII line transport on pyserial-asyncio-fast: one reader per port, lines routed by content.

Instruments such as the LuminOx and GSS sensors stream lines unsolicited *and* answer commands on
the same wire, so replies and stream lines interleave. :class:`SerialLine` owns the port, splits
the byte stream into lines (CR, LF or CR LF all terminate a line; empty lines are dropped) and
routes each line:

1. to the pending :meth:`SerialLine.request` if its ``match`` predicate accepts the line;
2. otherwise to every subscriber registered with :meth:`SerialLine.subscribe`.

Only one request is outstanding at a time (required on multi-drop lines such as Alicat RS-485,
where a new command before the previous reply's CR is undefined behaviour).

Ports are device paths (``/dev/ttyUSB0``, a pty slave) or pyserial URLs (``socket://host:port``,
``rfc2217://...``); pyserial-asyncio-fast maps ``socket://`` onto a native asyncio socket.

Reconnects: a lost port fails the pending request with :class:`BusDisconnectedError`; the next
request (or :meth:`SerialLine.ensure_open`) reopens it, with a non-blocking exponential backoff
between failed opens. The start-up wait of :meth:`SerialLine.open` sleeps between attempts and
does not advance that back-off; :meth:`SerialLine.state` tells why the line is not open (first
and latest failure), see :mod:`drivers.transport.startup`.

Errors: everything pyserial, pyserial-asyncio-fast, termios and the socket layer raise becomes a
:mod:`drivers.errors` error naming the line (:mod:`drivers.transport.failures`); after opening a
device path the line reads its settings back (``check_line_settings``), because a driver may
silently keep 8 data bits or no parity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import serial_asyncio_fast

from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import (
    BusDisconnectedError,
    DeviceTimeoutError,
    DriverError,
    OpenFailedError,
)
from drivers.transport.failures import (
    is_url,
    open_serial,
    release,
    runtime_error,
    serial_open_error,
    socket_address,
    tcp_connect_error,
)
from drivers.transport.library_logs import quiet_library_logs
from drivers.transport.settings import SerialLineSettings
from drivers.transport.startup import OpenTracker, TransportState

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Line:
    """One received text line (terminator stripped) with its arrival time."""

    text: str
    monotonic_s: float
    utc: datetime


LineMatcher = Callable[[str], bool]
LineListener = Callable[[Line], None]


def first_line_wait_s(stream_period_s: float) -> float:
    """How long a stream-mode sensor's first read waits for its first line after start.

    One stream period plus a margin of half a period (at least 0.25 s) for the sensor's jitter
    and the line's transit.
    """
    return stream_period_s + max(0.25, 0.5 * stream_period_s)


class _LineProtocol(asyncio.Protocol):
    """asyncio protocol that splits bytes into lines and hands them to the owning line."""

    def __init__(self, owner: SerialLine) -> None:
        self._owner = owner
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport) and not transport.is_closing():
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        limit = self._owner.settings.max_line_bytes
        while True:
            cut = _first_terminator(self._buffer)
            if cut < 0:
                break
            raw = bytes(self._buffer[:cut])
            del self._buffer[: cut + 1]
            if raw:
                self._owner.feed(raw.decode("ascii", errors="replace"))
        if len(self._buffer) > limit:
            _LOG.debug("%s: discarding %d bytes without terminator", self._owner.label, limit)
            self._buffer.clear()
            self._owner.garbage_lines += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._owner.lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)


def _first_terminator(buffer: bytearray) -> int:
    cr = buffer.find(b"\r")
    lf = buffer.find(b"\n")
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


class SerialLine:
    """A serial port (or pyserial URL) carrying CR/CR LF terminated ASCII lines.

    Args:
        settings: Port, framing and timing.
        clock: Time source for line timestamps and reconnect backoff.
        name: Label used in reasons and logs (defaults to the port).

    Attributes:
        generation: Incremented on every successful (re)open; drivers compare it to re-run
            their initialisation after a reconnect.
        garbage_lines: Overlong unterminated inputs discarded so far.
        unrouted_lines: Lines that matched no request and had no subscriber.
    """

    def __init__(
        self, settings: SerialLineSettings, *, clock: Clock = DEFAULT_CLOCK, name: str | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.name = name or settings.port
        self.label = f"line {self.name}"
        self.generation = 0
        self.garbage_lines = 0
        self.unrouted_lines = 0
        self._protocol: _LineProtocol | None = None
        self._listeners: list[LineListener] = []
        self._pending: tuple[LineMatcher, asyncio.Future[Line]] | None = None
        self._request_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._tracker = OpenTracker(
            self.label,
            settings.port,
            clock,
            settings.reconnect_initial_s,
            settings.reconnect_max_s,
            _LOG,
        )
        quiet_library_logs()

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._protocol is not None and self._protocol.transport is not None

    def state(self) -> TransportState:
        """Open or not, and why not: first and latest failure (``hypoxia devices read``)."""
        return self._tracker.state(self.connected)

    async def open(self, *, wait_s: float = 0.0) -> None:
        """Open the port now; with ``wait_s`` > 0 keep trying (sleeping) up to that long.

        Start-up attempts do not advance the run-time reconnect back-off.

        Raises:
            BusDisconnectedError: The port could not be opened; its keyword names the cause
                (``port_not_found``, ``line_setting_refused`` ...).
        """
        self._closed = False
        await self._tracker.start(self._open_once, wait_s)

    async def ensure_open(self) -> None:
        """Reopen a lost port if the backoff allows; else raise :class:`BusDisconnectedError`.

        The error's keyword is the latest open failure's (``disconnected`` if none).
        """
        if self.connected:
            return
        if self._closed:
            raise BusDisconnectedError(f"{self.label} is closed")
        if not self._tracker.reconnect.ready():
            raise self._tracker.not_open()
        await self._tracker.reopen(self._open_once)

    async def close(self) -> None:
        """Close the port and wait until the transport has released it."""
        self._closed = True
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await protocol.closed
        self._protocol = None

    async def __aenter__(self) -> SerialLine:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ traffic
    def subscribe(self, listener: LineListener) -> Callable[[], None]:
        """Receive every line that no pending request claims; returns an unsubscribe function.

        Listeners run in the event loop's reader callback: keep them short and non-blocking.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def send(self, command: str) -> None:
        """Write ``command`` plus the configured terminator without waiting for a reply.

        Raises:
            DriverError: The line is not open or the write failed (never a raw exception).
        """
        async with self._request_lock:
            await self.ensure_open()
            try:
                self._write(command)
            except DriverError:
                raise
            except Exception as exc:
                raise runtime_error(exc, self.label, f"sending {command!r}") from exc

    async def request(
        self, command: str, match: LineMatcher, *, timeout_s: float | None = None
    ) -> Line:
        """Send ``command`` and return the first line accepted by ``match``.

        Args:
            command: Command text without terminator.
            match: Predicate on a received line (terminator stripped) that identifies the reply.
            timeout_s: Reply timeout, seconds; defaults to ``settings.reply_timeout_s``.

        Raises:
            DeviceTimeoutError: No matching line in time.
            BusDisconnectedError: The port is closed or was lost while waiting (the keyword
                names why it is not open).
            DriverError: Anything else the stack raised, mapped (never a raw exception).
        """
        timeout = self.settings.reply_timeout_s if timeout_s is None else timeout_s
        async with self._request_lock:
            await self.ensure_open()
            future: asyncio.Future[Line] = asyncio.get_running_loop().create_future()
            self._pending = (match, future)
            try:
                self._write(command)
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError as exc:
                raise DeviceTimeoutError(
                    f"no reply to {command!r} on {self.label} within {timeout:g} s"
                ) from exc
            except DriverError:
                raise
            except Exception as exc:
                raise runtime_error(exc, self.label, repr(command)) from exc
            finally:
                self._pending = None

    # ------------------------------------------------------------------ protocol callbacks
    def feed(self, text: str) -> None:
        """Route one received line (called by the protocol; public for in-process adapters)."""
        line = Line(text, self.clock.monotonic(), self.clock.utc())
        pending = self._pending
        if pending is not None and not pending[1].done() and pending[0](text):
            pending[1].set_result(line)
            return
        if not self._listeners:
            self.unrouted_lines += 1
            return
        for listener in tuple(self._listeners):
            try:
                listener(line)
            except Exception:
                _LOG.exception("%s: line listener failed", self.label)

    def lost(self, protocol: _LineProtocol, exc: Exception | None) -> None:
        """Connection-lost callback: fail the pending request."""
        if protocol is not self._protocol:
            return
        _LOG.info("%s: connection lost (%s)", self.label, exc or "closed by the other end")
        pending = self._pending
        if pending is not None and not pending[1].done():
            cause = f" ({exc})" if exc else ""
            pending[1].set_exception(BusDisconnectedError(f"{self.label}: connection lost{cause}"))

    # ------------------------------------------------------------------ internals
    def _write(self, command: str) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise BusDisconnectedError(f"{self.label} not open")
        protocol.transport.write((command + self.settings.eol).encode("ascii"))

    async def _open_once(self) -> None:
        async with self._open_lock:
            if self.connected:
                return
            s = self.settings
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    transport, protocol = await self._connect()
            except TimeoutError as exc:
                raise OpenFailedError(
                    "connect_timeout",
                    f"{self.label}: {s.port} did not open within {s.connect_timeout_s:g} s",
                ) from exc
            if not isinstance(protocol, _LineProtocol):  # pragma: no cover
                transport.close()
                raise TypeError("unexpected protocol type")
            # The serial transport calls connection_made() on a later loop iteration.
            protocol.connection_made(transport)
            self._protocol = protocol
            self.generation += 1

    async def _connect(self) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """Open the port (a device path through :func:`open_serial`, a URL through the library).

        Raises:
            OpenFailedError: Classified; never a raw library exception.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        if is_url(s.port):
            try:
                return await serial_asyncio_fast.create_serial_connection(
                    loop,
                    lambda: _LineProtocol(self),
                    s.port,
                    baudrate=s.baudrate,
                    bytesize=s.bytesize,
                    parity=s.parity,
                    stopbits=s.stopbits,
                )
            except Exception as exc:  # OSError, SerialException, ValueError
                address = socket_address(s.port)
                if address is not None:
                    raise tcp_connect_error(release(exc), self.label, *address) from exc
                raise serial_open_error(release(exc), self.label, s.port) from exc
        port = await asyncio.to_thread(
            open_serial, s, self.label, exclusive=s.exclusive, check=s.check_line_settings
        )
        try:
            return await serial_asyncio_fast.connection_for_serial(
                loop, lambda: _LineProtocol(self), port
            )
        except Exception as exc:
            port.close()
            raise serial_open_error(release(exc), self.label, s.port) from exc
