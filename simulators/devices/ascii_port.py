"""A simulated ASCII serial port carrying one or more line-oriented instruments.

:class:`AsciiPortSim` serves its instruments either on a **pty** (the driver opens the slave path,
e.g. ``/dev/pts/7``; the simulator keeps the master in-process) or on a **TCP socket** (the driver
opens ``socket://127.0.0.1:PORT``). Every received line (CR, LF or CR LF terminated) is offered to
each instrument; instruments answer only what is addressed to them, so several Alicat units can
share one simulated RS-485 line. Streaming instruments emit lines every ``stream_interval_s``.
Baud rate and parity are not emulated (ptys and sockets ignore them).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import tty
from collections.abc import Callable, Sequence

from common.clock import DEFAULT_CLOCK, Clock
from simulators.devices.faults import Faults, garble_text


class AsciiInstrumentSim(abc.ABC):
    """Behaviour of one simulated ASCII instrument (no I/O).

    Attributes:
        eol: Line terminator the instrument sends (CR LF or CR).
        faults: Fault switches (``no_reply``, ``dropout``, ``garble``, ``stuck``, drift).
    """

    eol = "\r\n"

    def __init__(self, *, clock: Clock = DEFAULT_CLOCK) -> None:
        self.clock = clock
        self.faults = Faults(clock)

    @abc.abstractmethod
    def handle(self, command: str) -> list[str]:
        """Reply lines (without terminator) to one received command; [] for no reply."""

    def stream_lines(self) -> list[str]:
        """Lines to emit on a stream tick (empty when not streaming)."""
        return []


class _Writer:
    """Where bytes for one connected client go."""

    def __init__(self, write: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self.write = write
        self.close = close
        self.buffer = bytearray()


class _TcpClient(asyncio.Protocol):
    def __init__(self, port: AsciiPortSim) -> None:
        self._port = port
        self._writer: _Writer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            self._writer = _Writer(transport.write, transport.close)
            self._port.attach(self._writer)

    def data_received(self, data: bytes) -> None:
        if self._writer is not None:
            self._port.received(self._writer, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._writer is not None:
            self._port.detach(self._writer)
            self._writer = None


class AsciiPortSim:
    """Serve ASCII instruments on a pty or a TCP socket.

    Args:
        instruments: The instruments on this port.
        stream_interval_s: Period of stream ticks, seconds (``None``: never stream). Real
            devices: LuminOx 1 s, SprintIR 0.05 s; tests use shorter periods.
    """

    def __init__(
        self, instruments: Sequence[AsciiInstrumentSim], *, stream_interval_s: float | None = None
    ) -> None:
        if not instruments:
            raise ValueError("need at least one instrument")
        self.instruments = list(instruments)
        self.stream_interval_s = stream_interval_s
        self._clients: list[_Writer] = []
        self._server: asyncio.Server | None = None
        self._pty: tuple[int, int] | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self.commands: list[str] = []
        """Every command received, in order (for assertions)."""

    # ------------------------------------------------------------------ serving
    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on TCP; returns the pyserial URL ``socket://host:port`` for the driver."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpClient(self), host, port)
        bound = self._server.sockets[0].getsockname()[1]
        self._start_streaming()
        return f"socket://{host}:{bound}"

    async def serve_pty(self) -> str:
        """Create a pty pair; returns the slave device path for the driver to open."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        writer = _Writer(lambda data: self._pty_write(master, data), lambda: None)
        self.attach(writer)
        asyncio.get_running_loop().add_reader(master, self._pty_readable, master, writer)
        self._start_streaming()
        return os.ttyname(slave)

    async def close(self) -> None:
        """Stop streaming, close every client and the listener or pty."""
        if self._stream_task is not None:
            self._stream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream_task
            self._stream_task = None
        self.disconnect()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._pty is not None:
            master, slave = self._pty
            asyncio.get_running_loop().remove_reader(master)
            os.close(master)
            os.close(slave)
            self._pty = None
        self._clients.clear()

    async def __aenter__(self) -> AsciiPortSim:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def disconnect(self) -> int:
        """Drop TCP client connections (a pulled cable); returns how many were closed."""
        closed = 0
        for client in list(self._clients):
            if self._pty is None:
                client.close()
                closed += 1
        return closed

    # ------------------------------------------------------------------ traffic
    def attach(self, writer: _Writer) -> None:
        """A client connected."""
        self._clients.append(writer)

    def detach(self, writer: _Writer) -> None:
        """A client went away."""
        with contextlib.suppress(ValueError):
            self._clients.remove(writer)

    def received(self, writer: _Writer, data: bytes) -> None:
        """Bytes from a client: split into commands and answer them."""
        writer.buffer.extend(data)
        while True:
            cuts = [i for i in (writer.buffer.find(b"\r"), writer.buffer.find(b"\n")) if i >= 0]
            if not cuts:
                break
            cut = min(cuts)
            raw = bytes(writer.buffer[:cut])
            del writer.buffer[: cut + 1]
            if raw.strip():
                self._answer(writer, raw.decode("ascii", errors="replace").strip())
        if len(writer.buffer) > 1024:
            writer.buffer.clear()

    def _answer(self, writer: _Writer, command: str) -> None:
        self.commands.append(command)
        for instrument in self.instruments:
            replies = instrument.handle(command)
            self._emit(instrument, replies, [writer])

    def _emit(
        self, instrument: AsciiInstrumentSim, lines: list[str], writers: Sequence[_Writer]
    ) -> None:
        if not lines or instrument.faults.silent:
            return
        if instrument.faults.garble:
            lines = [garble_text(line) for line in lines]
        payload = "".join(line + instrument.eol for line in lines).encode("ascii")
        for writer in writers:
            writer.write(payload)

    def _start_streaming(self) -> None:
        if self.stream_interval_s is not None and self._stream_task is None:
            self._stream_task = asyncio.create_task(self._stream(self.stream_interval_s))

    async def _stream(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for instrument in self.instruments:
                self._emit(instrument, instrument.stream_lines(), list(self._clients))

    # ------------------------------------------------------------------ pty plumbing
    def _pty_readable(self, master: int, writer: _Writer) -> None:
        try:
            data = os.read(master, 4096)
        except OSError:
            return
        if data:
            self.received(writer, data)

    @staticmethod
    def _pty_write(master: int, data: bytes) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(master, data)
