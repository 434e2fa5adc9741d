"""Start simulators together with connected drivers' transports, and tear everything down.

Used by the driver tests and handy for hardware-in-the-loop demos::

    async with modbus_harness(clock) as make:
        bus, hub = await make([GmpSim(link), Pt100Sim(link)], framing="rtu")
        co2 = VaisalaGMP25x(hub, clock=clock)

Each ``make`` call starts one simulated bus/port on a free loopback port and opens a
:class:`~drivers.transport.modbus.ModbusHub` / :class:`~drivers.transport.serial_line.SerialLine`
to it; leaving the context closes all of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Literal, Protocol

from common.clock import DEFAULT_CLOCK, Clock
from drivers.transport.modbus import ModbusHub
from drivers.transport.serial_line import SerialLine
from drivers.transport.settings import SerialLineSettings
from simulators.devices.ascii_port import AsciiInstrumentSim, AsciiPortSim
from simulators.devices.modbus_bus import ModbusBusSim, ModbusDeviceSim

Framing = Literal["socket", "rtu"]
AsciiTransport = Literal["tcp", "pty"]


class ModbusFactory(Protocol):
    """Start a simulated bus and return it with a connected hub."""

    def __call__(
        self,
        devices: Sequence[ModbusDeviceSim],
        framing: Framing = "socket",
        *,
        name: str | None = None,
        **settings: object,
    ) -> Awaitable[tuple[ModbusBusSim, ModbusHub]]:
        """Start ``devices`` on one bus; ``settings`` override the hub settings.

        ``name`` names the hub (as a site file's bus name would).
        """
        ...


class AsciiFactory(Protocol):
    """Serve ASCII instruments and return the port with an open serial line."""

    def __call__(
        self,
        instruments: Sequence[AsciiInstrumentSim],
        transport: AsciiTransport = "tcp",
        stream_interval_s: float | None = None,
        *,
        name: str | None = None,
        **settings: object,
    ) -> Awaitable[tuple[AsciiPortSim, SerialLine]]:
        """Serve ``instruments`` on one port; ``settings`` override the line settings.

        ``name`` names the line (as a site file's line name would).
        """
        ...


@contextlib.asynccontextmanager
async def modbus_harness(
    clock: Clock = DEFAULT_CLOCK, *, timeout_s: float = 0.2, retries: int = 0
) -> AsyncIterator[ModbusFactory]:
    """Yield a :class:`ModbusFactory`; hub defaults: ``timeout_s`` and ``retries`` as given."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            devices: Sequence[ModbusDeviceSim],
            framing: Framing = "socket",
            *,
            name: str | None = None,
            **settings: object,
        ) -> tuple[ModbusBusSim, ModbusHub]:
            bus = ModbusBusSim(devices, framing=framing)
            await bus.start()
            stack.push_async_callback(bus.stop)
            merged = {"timeout_s": timeout_s, "retries": retries, **settings}
            hub = ModbusHub(bus.settings(**merged), clock=clock, name=name)
            await hub.connect()
            stack.push_async_callback(hub.close)
            return bus, hub

        yield make


@contextlib.asynccontextmanager
async def ascii_harness(
    clock: Clock = DEFAULT_CLOCK, *, reply_timeout_s: float = 0.2
) -> AsyncIterator[AsciiFactory]:
    """Yield an :class:`AsciiFactory`; lines use the first instrument's terminator."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            instruments: Sequence[AsciiInstrumentSim],
            transport: AsciiTransport = "tcp",
            stream_interval_s: float | None = None,
            *,
            name: str | None = None,
            **settings: object,
        ) -> tuple[AsciiPortSim, SerialLine]:
            sim = AsciiPortSim(instruments, stream_interval_s=stream_interval_s)
            stack.push_async_callback(sim.close)
            port = await sim.serve_tcp() if transport == "tcp" else await sim.serve_pty()
            line_settings = SerialLineSettings.model_validate(
                {
                    "port": port,
                    "eol": instruments[0].eol,
                    "reply_timeout_s": reply_timeout_s,
                    **settings,
                }
            )
            line = SerialLine(line_settings, clock=clock, name=name)
            await line.open()
            stack.push_async_callback(line.close)
            return sim, line

        yield make
