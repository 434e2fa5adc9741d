"""A simulated Modbus bus: one pymodbus 3.16 server carrying one or more simulated devices.

Framing is either Modbus TCP (``"socket"``) or **RTU frames over TCP** (``"rtu"``; clients
connect with the pyserial URL ``socket://host:port``), so RTU framing and CRCs are exercised
without a serial port. Bind to port 0 and read :attr:`ModbusBusSim.port` afterwards.

pymodbus 3.16 notes (docs/protocols.md §5.3): register values are served from each device's
``action`` callback (the legacy "update the context" pattern silently does nothing in 3.16);
requests for unknown unit ids are swallowed here (no reply), as on a real RS-485 line, instead
of pymodbus's exception 04 which would corrupt other devices' traffic.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from common.clock import DEFAULT_CLOCK, Clock
from drivers.transport.settings import ModbusRtuSettings, ModbusTcpSettings
from simulators.devices.faults import Faults

SetValues = list[int] | list[bool] | None


class ModbusDeviceSim(abc.ABC):
    """Base of a simulated Modbus device: a unit id, its :class:`Faults` and register logic.

    Subclasses implement :meth:`build` (the register layout) and :meth:`on_read` /
    :meth:`on_write`. Fault handling (exceptions, stuck writes) happens here; silence and
    garbling happen in :class:`ModbusBusSim`.

    Args:
        unit: Modbus unit id, 1-247.
        clock: Time source for faults.
    """

    def __init__(self, unit: int, *, clock: Clock = DEFAULT_CLOCK) -> None:
        if not 1 <= unit <= 247:
            raise ValueError("unit id must be 1..247")
        self.unit = unit
        self.clock = clock
        self.faults = Faults(clock)

    @abc.abstractmethod
    def build(self) -> list[SimData] | tuple[list[SimData], ...]:
        """Register layout: a shared list, or the 4-tuple (coils, discrete, holding, input)."""

    def on_read(  # noqa: B027 - optional hook, default does nothing
        self, fc: int, start: int, address: int, count: int, regs: list[int]
    ) -> None:
        """Refresh ``regs`` (the whole table; index = address - start) before a read."""

    def on_write(
        self, fc: int, start: int, address: int, regs: list[int], values: list[int] | list[bool]
    ) -> int | None:
        """Handle a write before it is stored; may edit ``values`` in place.

        Returns:
            ``None`` to accept, or a Modbus exception code.
        """
        return None

    def current_for_write(
        self, fc: int, start: int, address: int, regs: list[int], count: int
    ) -> list[int] | list[bool]:
        """Current stored values of the write target (used to ignore writes when stuck)."""
        offset = address - start
        return regs[offset : offset + count]

    def sim_device(self) -> SimDevice:
        """The pymodbus device, with this object's action callback."""
        layout = self.build()
        simdata: list[SimData] | tuple[list[SimData], list[SimData], list[SimData], list[SimData]]
        if isinstance(layout, tuple):
            coils, discrete, holding, inputs = layout
            simdata = (coils, discrete, holding, inputs)
        else:
            simdata = layout
        return SimDevice(id=self.unit, simdata=simdata, action=self._action)

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], values: SetValues
    ) -> ExcCodes | None:
        if self.faults.exception_code is not None:
            return ExcCodes(self.faults.exception_code)
        if values is None:
            self.on_read(fc, start, address, count, regs)
            return None
        if self.faults.stuck:
            current = self.current_for_write(fc, start, address, regs, len(values))
            cast("list[int]", values)[:] = cast("list[int]", current)
            return None
        code = self.on_write(fc, start, address, regs, values)
        return None if code is None else ExcCodes(code)


def put(regs: list[int], start: int, address: int, values: Sequence[int]) -> None:
    """Store ``values`` at wire ``address`` of a register table that begins at ``start``."""
    offset = address - start
    regs[offset : offset + len(values)] = list(values)


def overlaps(address: int, count: int, first: int, size: int) -> bool:
    """True if the request ``[address, address+count)`` touches ``[first, first+size)``."""
    return address < first + size and first < address + count


class ModbusBusSim:
    """One pymodbus server (TCP or RTU-over-TCP) serving several simulated devices.

    Args:
        devices: The devices on this bus (distinct unit ids).
        framing: ``"socket"`` (Modbus TCP) or ``"rtu"`` (RTU frames over a TCP socket).
        host: Interface to bind.
        port: TCP port; 0 picks a free one.
        serial_port: Serve RTU on this serial device instead of TCP (e.g. one end of a
            :class:`~simulators.devices.null_modem.PtyNullModem`); implies ``framing="rtu"``.

    Attributes:
        devices: By unit id.
    """

    def __init__(
        self,
        devices: Sequence[ModbusDeviceSim],
        *,
        framing: Literal["socket", "rtu"] = "socket",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str | None = None,
    ) -> None:
        self.devices = {d.unit: d for d in devices}
        if len(self.devices) != len(devices):
            raise ValueError("unit ids on one bus must be distinct")
        self.serial_port = serial_port
        self.framing: Literal["socket", "rtu"] = "rtu" if serial_port else framing
        self.host = host
        self._port = port
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @property
    def port(self) -> int:
        """Bound TCP port (valid after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """Where RTU clients connect: ``socket://host:port`` or the serial device."""
        return self.serial_port or f"socket://{self.host}:{self._port}"

    def settings(self, **overrides: object) -> ModbusTcpSettings | ModbusRtuSettings:
        """Client settings that reach this bus (test and demo convenience).

        For a ``serial_port`` bus pass ``port=`` the *other* end of the null-modem cable.
        """
        if self.framing == "socket":
            return ModbusTcpSettings.model_validate(
                {"host": self.host, "port": self._port, **overrides}
            )
        return ModbusRtuSettings.model_validate({"port": self.url, **overrides})

    async def start(self) -> None:
        """Start listening (re-uses the previous port after a :meth:`stop`)."""
        if self._server is not None:
            return
        devices = [d.sim_device() for d in self.devices.values()]
        # Catch-all id 0: unknown ids get an answer from it, which _trace then drops, so the
        # server neither logs KeyError tracebacks nor puts exception 04 on the line.
        devices.append(SimDevice(id=0, simdata=[SimData(0, datatype=DataType.INVALID)]))
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial_port is not None:
            server = ModbusSerialServer(
                devices, port=self.serial_port, framer=FramerType.RTU, trace_packet=self._trace
            )
        elif self.framing == "socket":
            server = ModbusTcpServer(
                devices, address=(self.host, self._port), trace_packet=self._trace
            )
        else:
            server = ModbusSerialServer(
                devices, port=self.url, framer=FramerType.RTU, trace_packet=self._trace
            )
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None)
        if sockets:
            self._port = int(sockets[0].getsockname()[1])
        self._server = server

    async def stop(self) -> None:
        """Stop listening and drop all client connections."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> ModbusBusSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def disconnect_clients(self) -> int:
        """Close every client connection (the server keeps listening); returns how many."""
        if self._server is None:
            return 0
        connections = list(self._server.active_connections.values())
        for connection in connections:
            connection.close()
        return len(connections)

    def _unit_of(self, frame: bytes) -> int | None:
        index = 6 if self.framing == "socket" else 0
        return frame[index] if len(frame) > index else None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending or not data:
            return data
        device = self.devices.get(self._unit_of(data) or 0)
        if device is None or device.faults.silent:
            return b""
        if device.faults.garble:
            if self.framing == "rtu":
                return data[:-1] + bytes([data[-1] ^ 0xFF])  # bad CRC
            return data[: len(data) // 2]  # truncated MBAP frame
        return data
