"""One shared pymodbus client per Modbus bus (RTU line or TCP connection).

Design follows Home Assistant's ``ModbusHub``: all devices on a bus share the hub, and errors are
mapped to the driver layer's own exceptions (:mod:`drivers.errors`) so nothing above this module
imports pymodbus.

**Concurrency.** pymodbus 3.16's async client holds one request in flight per connection (its
``TransactionManager.execute`` runs under a lock until the reply), and its server handles one
frame per received chunk, so requests cannot be pipelined by Modbus TCP transaction id over one
connection with this library. A Modbus TCP bus therefore keeps ``connections`` clients to the
same address (a slot each) and runs that many transactions at a time: the devices behind one
gateway are read in parallel up to what the gateway accepts. An RTU bus (a serial line, or RTU
frames over TCP) has one slot: its wire carries one transaction at a time.

Failure handling, sized for a ~1 s control cycle:

* **Per request** pymodbus re-sends ``retries`` times after ``timeout_s`` (a bad-CRC reply is
  discarded by the RTU framer and looks like a timeout).
* **Per unit**: a unit that times out ``unit_skip_after`` times in a row is *skipped* (requests
  fail immediately with :class:`DeviceTimeoutError`, no bus time used) for an exponentially growing
  period, then probed again. A silent unit 3 therefore degrades only itself: unit 4 on the same
  bus keeps its normal latency.
* ``socket://host:port`` RTU ports (RTU over a TCP serial server, or the simulators) are opened
  with pymodbus's TCP client and RTU framing rather than through pyserial, whose ``socket://``
  handler blocks the event loop for 0.3 s on every close.
* **Per bus**: when the connection is lost, the next request reconnects; failed opens back off
  exponentially (non-blocking deadline, see :class:`common.backoff.Backoff`).
  pymodbus's own background reconnect is disabled so that reconnects happen on our clock.
* **Why it is down**: :class:`~drivers.transport.startup.OpenTracker` keeps the first and latest
  open failure (:meth:`ModbusHub.state`); a request while the bus is down fails with the cause's
  keyword (``port_not_found``, ``connection_refused`` ...). pymodbus's ``connect()`` only returns
  ``False``, so the hub finds the cause itself (:mod:`drivers.transport.failures`): an RTU device
  path is opened once by the hub first (settings read back, ``check_line_settings``), a TCP
  connect that failed is tried once more with a plain socket.

Start-up waits (:meth:`ModbusHub.connect` with ``wait_s``) sleep between attempts and do not
advance the run-time back-off (:mod:`drivers.transport.startup`). Every exception of pymodbus,
pyserial and termios becomes a :mod:`drivers.errors` error naming the bus.

pymodbus facts relied on (pymodbus 3.16.1, docs/protocols.md §5): ``device_id=`` keyword,
Modbus exceptions come back as an ``ExceptionResponse`` (not raised), no reply raises
``ModbusIOException``, a call while disconnected raises ``ConnectionException``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from common.backoff import Backoff
from common.clock import DEFAULT_CLOCK, Clock
from drivers.errors import (
    BusDisconnectedError,
    DeviceTimeoutError,
    ModbusDeviceError,
    OpenFailedError,
    ProtocolError,
)
from drivers.transport.failures import (
    diagnose_serial_open,
    diagnose_tcp_connect,
    is_url,
    open_serial,
    refine_setting_error,
    release,
    runtime_error,
    serial_open_error,
    socket_address,
    tcp_connect_error,
)
from drivers.transport.library_logs import quiet_library_logs
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from drivers.transport.startup import OpenTracker, TransportState

_LOG = logging.getLogger(__name__)

_Client = AsyncModbusTcpClient | AsyncModbusSerialClient
_Call = Callable[[_Client], Awaitable[ModbusPDU]]


@dataclass(slots=True)
class HubStats:
    """Counters of one hub since it was created (for diagnostics and benchmarks)."""

    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    exceptions: int = 0
    skipped: int = 0
    connects: int = 0
    connect_failures: int = 0


class ModbusHub:
    """Shared, locked pymodbus client for every device on one bus.

    Args:
        settings: Bus settings (TCP or RTU).
        clock: Time source for backoff deadlines.
        name: Label used in reasons and logs; defaults to the host:port or serial port.

    Addresses are always wire (0-based) addresses; drivers convert manual register numbers.
    """

    def __init__(
        self,
        settings: ModbusTcpSettings | ModbusRtuSettings,
        *,
        clock: Clock = DEFAULT_CLOCK,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        if isinstance(settings, ModbusTcpSettings):
            default_name = f"modbus-tcp {settings.host}:{settings.port}"
        else:
            default_name = f"modbus-rtu {settings.port}"
        self.name = name or default_name
        self.label = f"bus {self.name}"
        self.stats = HubStats()
        self.slots = settings.connections if isinstance(settings, ModbusTcpSettings) else 1
        """Transactions in flight at once: one per connection (one on an RTU bus)."""
        self._client: _Client | None = None  # slot 0: opened by connect(), tracked for causes
        self._extra: list[_Client | None] = [None] * (self.slots - 1)  # slots 1..n-1, lazily
        self._free = list(range(self.slots))[::-1]  # pop() hands out slot 0 first
        self._lock = asyncio.Semaphore(self.slots)
        self._closed = False
        where = (
            f"{settings.host}:{settings.port}"
            if isinstance(settings, ModbusTcpSettings)
            else settings.port
        )
        self._tracker = OpenTracker(
            self.label,
            where,
            clock,
            settings.reconnect_initial_s,
            settings.reconnect_max_s,
            _LOG,
        )
        self._units: dict[int, Backoff] = {}
        quiet_library_logs()

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """True while the underlying connection is open."""
        return self._client is not None and self._client.connected

    def state(self) -> TransportState:
        """Open or not, and why not: first and latest failure (``hypoxia devices read``)."""
        return self._tracker.state(self.connected)

    async def connect(self, *, wait_s: float = 0.0) -> None:
        """Open the bus now.

        Args:
            wait_s: If > 0, keep retrying (sleeping between attempts, exponential with jitter)
                for up to this many seconds -- for start-up, when a gateway or simulator may
                still be booting. These attempts do not advance the run-time back-off.

        Raises:
            BusDisconnectedError: The bus could not be opened (within ``wait_s``); its keyword
                names the cause (``connection_refused``, ``port_not_found`` ...).
        """
        self._closed = False
        await self._tracker.start(self._open_once, wait_s)

    async def close(self) -> None:
        """Close the connections; requests then fail as disconnected until :meth:`connect`."""
        self._closed = True
        for _ in range(self.slots):  # wait for the requests in flight
            await self._lock.acquire()
        try:
            for client in [self._client, *self._extra]:
                if client is not None:
                    client.close()
            self._client = None
            self._extra = [None] * (self.slots - 1)
        finally:
            for _ in range(self.slots):
                self._lock.release()

    async def __aenter__(self) -> ModbusHub:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def unit_failures(self, unit: int) -> int:
        """Consecutive timeouts of ``unit`` (0 when it last answered)."""
        backoff = self._units.get(unit)
        return backoff.failures if backoff else 0

    # ------------------------------------------------------------------ requests
    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        """FC03: read ``count`` (1-125) holding registers starting at wire ``address``."""
        rr = await self._transact(
            unit,
            (3, address, count),
            lambda c: c.read_holding_registers(address, count=count, device_id=unit),
        )
        return _registers(rr, count, f"unit {unit} on {self.label}")

    async def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        """FC04: read ``count`` (1-125) input registers starting at wire ``address``."""
        rr = await self._transact(
            unit,
            (4, address, count),
            lambda c: c.read_input_registers(address, count=count, device_id=unit),
        )
        return _registers(rr, count, f"unit {unit} on {self.label}")

    async def read_coils(self, unit: int, address: int, count: int) -> list[bool]:
        """FC01: read ``count`` coils starting at wire ``address``."""
        rr = await self._transact(
            unit, (1, address, count), lambda c: c.read_coils(address, count=count, device_id=unit)
        )
        return _bits(rr, count, f"unit {unit} on {self.label}")

    async def read_discrete_inputs(self, unit: int, address: int, count: int) -> list[bool]:
        """FC02: read ``count`` discrete inputs starting at wire ``address``."""
        rr = await self._transact(
            unit,
            (2, address, count),
            lambda c: c.read_discrete_inputs(address, count=count, device_id=unit),
        )
        return _bits(rr, count, f"unit {unit} on {self.label}")

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """FC06: write one holding register (0-65535)."""
        await self._transact(
            unit, (6, address, 1), lambda c: c.write_register(address, value, device_id=unit)
        )

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """FC16: write consecutive holding registers in one transaction."""
        regs = list(values)
        await self._transact(
            unit,
            (16, address, len(regs)),
            lambda c: c.write_registers(address, regs, device_id=unit),
        )

    async def write_coil(self, unit: int, address: int, on: bool) -> None:
        """FC05: switch one coil on (0xFF00) or off (0x0000)."""
        await self._transact(
            unit, (5, address, 1), lambda c: c.write_coil(address, on, device_id=unit)
        )

    async def write_coils(self, unit: int, address: int, values: Sequence[bool]) -> None:
        """FC15: write consecutive coils in one transaction."""
        bits = list(values)
        await self._transact(
            unit, (15, address, len(bits)), lambda c: c.write_coils(address, bits, device_id=unit)
        )

    # ------------------------------------------------------------------ internals
    def _make_client(self) -> _Client:
        s = self.settings
        if isinstance(s, ModbusTcpSettings):
            framer = FramerType.SOCKET if s.framing == "socket" else FramerType.RTU
            return self._tcp_client(s.host, s.port, framer)
        address = socket_address(s.port)
        if address is not None:
            # RTU over a TCP serial server: pyserial's socket:// handler sleeps 0.3 s inside
            # close() (blocking the event loop), so use pymodbus's native TCP client instead.
            return self._tcp_client(*address, FramerType.RTU)
        return AsyncModbusSerialClient(
            s.port,
            framer=FramerType.RTU,
            baudrate=s.baudrate,
            bytesize=s.bytesize,
            parity=s.parity,
            stopbits=s.stopbits,
            timeout=s.timeout_s,
            retries=s.retries,
            reconnect_delay=0,
            name=self.name,
        )

    def _tcp_client(self, host: str, port: int, framer: FramerType) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(
            host,
            port=port,
            framer=framer,
            timeout=self.settings.timeout_s,
            retries=self.settings.retries,
            reconnect_delay=0,
            name=self.name,
        )

    async def _open_once(self) -> None:
        if self._client is None:
            self._client = self._make_client()
        if self._client.connected:
            return
        client = self._client
        try:
            await self._preflight()
            ok = await client.connect()
        except OpenFailedError:
            self.stats.connect_failures += 1
            raise
        except Exception as exc:  # termios.error, ValueError: pymodbus catches only OSError
            client.close()
            self.stats.connect_failures += 1
            raise await self._open_error(release(exc)) from exc
        if ok:
            self.stats.connects += 1
            return
        client.close()
        self.stats.connect_failures += 1
        raise await self._open_error(None)

    async def _preflight(self) -> None:
        """Open an RTU device path once ourselves (and close it) before pymodbus does.

        pymodbus's ``connect()`` swallows the cause of an ``OSError`` and, when a line setting
        does not take, raises ``termios.error`` after the port was opened -- leaving it open
        and locked. :func:`~drivers.transport.failures.open_serial` classifies every failure,
        names a refused setting and closes the port again.
        """
        s = self.settings
        if isinstance(s, ModbusTcpSettings) or is_url(s.port):
            return
        port = await asyncio.to_thread(
            open_serial, s, self.label, exclusive=True, check=s.check_line_settings
        )
        port.close()

    async def _open_error(self, exc: Exception | None) -> OpenFailedError:
        """Why the open failed: classify ``exc``, or find the cause pymodbus only logged."""
        s = self.settings
        if isinstance(s, ModbusTcpSettings):
            address: tuple[str, int] | None = (s.host, s.port)
        else:
            address = socket_address(s.port)
        if address is not None:
            host, port = address
            if exc is not None:
                return tcp_connect_error(exc, self.label, host, port)
            return await diagnose_tcp_connect(self.label, host, port, max(s.timeout_s, 1.0))
        assert isinstance(s, ModbusRtuSettings)  # noqa: S101 - a serial port is left
        if exc is None:
            return await asyncio.to_thread(diagnose_serial_open, s, self.label)
        error = serial_open_error(exc, self.label, s.port)
        return await asyncio.to_thread(refine_setting_error, error, s, self.label)

    async def _ensure_extra(self, slot: int) -> _Client:
        """The client of extra slot ``slot`` (>= 1), opened on first use or after a drop.

        Opened only while the main connection is up (its tracker keeps the bus's causes and
        back-off); a refused extra connection fails this request only.
        """
        client = self._extra[slot - 1]
        if client is not None and client.connected:
            return client
        await self._ensure_connected()  # the bus is up, or this raises its cause
        if client is None:
            client = self._extra[slot - 1] = self._make_client()
        try:
            ok = await client.connect()
        except Exception as exc:
            client.close()
            raise runtime_error(exc, self.label, f"connection {slot + 1}") from exc
        if not ok:
            client.close()
            self.stats.connect_failures += 1
            msg = (
                f"{self.label}: connection {slot + 1} of {self.slots} refused (does the gateway "
                "accept that many clients? lower 'connections')"
            )
            raise BusDisconnectedError(msg)
        self.stats.connects += 1
        return client

    async def _ensure_connected(self) -> _Client:
        if self._closed:
            raise BusDisconnectedError(f"{self.label} is closed")
        if self._client is not None and self._client.connected:
            return self._client
        if not self._tracker.reconnect.ready():
            raise self._tracker.not_open()
        await self._tracker.reopen(self._open_once)
        if self._client is None:  # pragma: no cover - _open_once sets it or raises
            raise BusDisconnectedError(f"{self.label} not connected")
        return self._client

    def _unit(self, unit: int) -> Backoff:
        backoff = self._units.get(unit)
        if backoff is None:
            s = self.settings
            backoff = Backoff(
                self.clock,
                s.unit_skip_initial_s,
                max(s.unit_skip_max_s, s.unit_skip_initial_s),
                threshold=s.unit_skip_after,
            )
            self._units[unit] = backoff
        return backoff

    async def _transact(self, unit: int, request: tuple[int, int, int], call: _Call) -> ModbusPDU:
        """Run one request on a free connection; ``request`` is (function code, address, count).

        This is the hot path (see bench/modbus_throughput.py): no per-call timers of our own
        (pymodbus bounds every try with ``timeout_s``), text formatting only on errors.
        """
        health = self._units.get(unit) or self._unit(unit)
        if health.failures >= health.threshold and not health.ready():
            self.stats.skipped += 1
            raise DeviceTimeoutError(
                f"unit {unit} on {self.label} silent for {health.failures} requests; "
                f"next probe in {health.remaining_s():.1f} s"
            )
        async with self._lock:
            slot = self._free.pop()
            try:
                response = await self._on_slot(slot, unit, health, request, call)
            finally:
                self._free.append(slot)
        if health.failures:
            health.succeeded()
        if response.isError():
            self.stats.exceptions += 1
            code = int(getattr(response, "exception_code", 0))
            raise ModbusDeviceError(code, f"unit {unit} on {self.label}, {_describe(request)}")
        self.stats.ok += 1
        return response

    async def _on_slot(
        self, slot: int, unit: int, health: Backoff, request: tuple[int, int, int], call: _Call
    ) -> ModbusPDU:
        """One request of ``unit`` on connection ``slot``, failures mapped to driver errors."""
        if slot == 0:
            client = self._client
            if client is None or not client.connected:
                client = await self._ensure_connected()
        else:
            client = await self._ensure_extra(slot)
        self.stats.requests += 1
        try:
            return await call(client)
        except ModbusIOException as exc:
            health.failed()
            what = _describe(request)
            text = str(exc)
            if "device id" in text or "transaction id" in text:
                raise ProtocolError(
                    f"unit {unit} on {self.label}: {what}: reply from another id ({text})"
                ) from exc
            self.stats.timeouts += 1
            tries = self.settings.retries + 1
            raise DeviceTimeoutError(
                f"no reply from unit {unit} on {self.label} to {what} "
                f"({tries} x {self.settings.timeout_s:g} s)"
            ) from exc
        except Exception as exc:  # ConnectionException, OSError, ModbusException ...
            raise runtime_error(exc, self.label, f"unit {unit} {_describe(request)}") from exc


def _describe(request: tuple[int, int, int]) -> str:
    fc, address, count = request
    return f"FC{fc:02d} @{address}+{count}"


def _registers(rr: ModbusPDU, count: int, where: str) -> list[int]:
    regs = list(rr.registers)
    if len(regs) < count:
        raise ProtocolError(f"{where}: expected {count} registers, got {len(regs)}")
    return regs[:count]


def _bits(rr: ModbusPDU, count: int, where: str) -> list[bool]:
    bits = list(rr.bits)
    if len(bits) < count:
        raise ProtocolError(f"{where}: expected {count} bits, got {len(bits)}")
    return bits[:count]
