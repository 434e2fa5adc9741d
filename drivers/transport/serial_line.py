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
between failed opens. :mod:`stamina` handles only the blocking start-up wait in
:meth:`SerialLine.open`, for the same reason as in :mod:`drivers.transport.modbus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import serial
import serial_asyncio_fast

from common.backoff import Backoff
from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import BusDisconnectedError, DeviceTimeoutError
from drivers.transport.settings import SerialLineSettings
from drivers.transport.startup import open_with_retry

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Line:
    """One received text line (terminator stripped) with its arrival time."""

    text: str
    monotonic_s: float
    utc: datetime


LineMatcher = Callable[[str], bool]
LineListener = Callable[[Line], None]


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
            _LOG.debug("%s: discarding %d bytes without terminator", self._owner.name, limit)
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
        self.generation = 0
        self.garbage_lines = 0
        self.unrouted_lines = 0
        self._protocol: _LineProtocol | None = None
        self._listeners: list[LineListener] = []
        self._pending: tuple[LineMatcher, asyncio.Future[Line]] | None = None
        self._request_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._closed = False
        self._reconnect = Backoff(
            clock,
            settings.reconnect_initial_s,
            max(settings.reconnect_max_s, settings.reconnect_initial_s),
        )

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._protocol is not None and self._protocol.transport is not None

    async def open(self, *, wait_s: float = 0.0) -> None:
        """Open the port now; with ``wait_s`` > 0 retry (stamina backoff) up to that long.

        Raises:
            BusDisconnectedError: The port could not be opened.
        """
        self._closed = False
        await open_with_retry(self._open_once, wait_s)

    async def ensure_open(self) -> None:
        """Reopen a lost port if the backoff allows; else raise :class:`BusDisconnectedError`."""
        if self.connected:
            return
        if self._closed:
            raise BusDisconnectedError(f"{self.name} is closed")
        if not self._reconnect.ready():
            raise BusDisconnectedError(
                f"{self.name} not open; next attempt in {self._reconnect.remaining_s():.1f} s"
            )
        await self._open_once()

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
        """Write ``command`` plus the configured terminator without waiting for a reply."""
        async with self._request_lock:
            await self.ensure_open()
            self._write(command)

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
            BusDisconnectedError: The port is closed or was lost while waiting.
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
                    f"timeout: no reply to {command!r} on {self.name} within {timeout:g} s"
                ) from exc
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
                _LOG.exception("%s: line listener failed", self.name)

    def lost(self, protocol: _LineProtocol, exc: Exception | None) -> None:
        """Connection-lost callback: fail the pending request."""
        if protocol is not self._protocol:
            return
        _LOG.info("%s: connection lost (%s)", self.name, exc)
        pending = self._pending
        if pending is not None and not pending[1].done():
            pending[1].set_exception(BusDisconnectedError(f"{self.name}: connection lost"))

    # ------------------------------------------------------------------ internals
    def _write(self, command: str) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise BusDisconnectedError(f"{self.name} not open")
        protocol.transport.write((command + self.settings.eol).encode("ascii"))

    async def _open_once(self) -> None:
        async with self._open_lock:
            if self.connected:
                return
            s = self.settings
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(s.connect_timeout_s):
                    transport, protocol = await serial_asyncio_fast.create_serial_connection(
                        loop,
                        lambda: _LineProtocol(self),
                        s.port,
                        baudrate=s.baudrate,
                        bytesize=s.bytesize,
                        parity=s.parity,
                        stopbits=s.stopbits,
                    )
            except (OSError, serial.SerialException, TimeoutError) as exc:
                delay = self._reconnect.failed()
                raise BusDisconnectedError(
                    f"cannot open {self.name}: {exc}; next attempt in {delay:.1f} s"
                ) from exc
            if not isinstance(protocol, _LineProtocol):  # pragma: no cover
                raise TypeError("unexpected protocol type")
            # The serial transport calls connection_made() on a later loop iteration.
            protocol.connection_made(transport)
            self._protocol = protocol
            self._reconnect.succeeded()
            self.generation += 1
