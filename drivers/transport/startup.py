"""Start-up retry for buses and lines (a gateway or simulator that may still be booting).

Blocking retry with sleeps, through :mod:`stamina`, used only at start-up (see
:meth:`drivers.transport.modbus.ModbusHub.connect`). Reconnects during operation never sleep: they
use the deadline back-off of :mod:`common.backoff`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import stamina

from drivers.errors import BusDisconnectedError


async def open_with_retry(open_once: Callable[[], Awaitable[None]], wait_s: float) -> None:
    """Open a bus or line now; with ``wait_s`` > 0 keep retrying that long (start-up only).

    Exponential backoff with jitter through :func:`stamina.retry_context`, for a gateway or
    simulator that may still be booting.

    Raises:
        BusDisconnectedError: Not open within ``wait_s``.
    """
    if wait_s <= 0:
        await open_once()
        return
    async for attempt in stamina.retry_context(
        on=BusDisconnectedError,
        attempts=None,
        timeout=wait_s,
        wait_initial=0.05,
        wait_max=2.0,
        wait_jitter=0.1,
    ):
        with attempt:
            await open_once()
