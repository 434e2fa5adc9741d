"""Fixtures for driver tests: real protocol stacks on 127.0.0.1, free ports, a manual clock.

``modbus(devices, framing=...)`` starts a simulated bus and returns it with a connected hub;
``ascii_line(instruments, transport=...)`` serves ASCII instruments on a pty or a TCP socket and
returns them with an open serial line (see :mod:`simulators.devices.harness`). Timeouts are short
(0.2 s) so fault tests stay fast; loopback replies take about a millisecond.

``tests/drivers`` is the package ``tests.drivers`` (``tests/__init__.py`` must stay): without the
parent package pytest would import this folder as a top-level ``drivers`` and shadow the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.clock import ManualClock
from simulators.devices.harness import AsciiFactory, ModbusFactory, ascii_harness, modbus_harness
from simulators.devices.link import StaticPlantLink


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def link() -> StaticPlantLink:
    return StaticPlantLink()


@pytest.fixture
async def modbus(clock: ManualClock) -> AsyncIterator[ModbusFactory]:
    async with modbus_harness(clock, timeout_s=0.2) as make:
        yield make


@pytest.fixture
async def ascii_line(clock: ManualClock) -> AsyncIterator[AsciiFactory]:
    async with ascii_harness(clock, reply_timeout_s=0.2) as make:
        yield make
