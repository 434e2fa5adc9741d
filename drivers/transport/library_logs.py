"""The serial and Modbus libraries' own logging: off unless asked for.

pymodbus 3.16 logs every unanswered request at ERROR with a hex dump of the last frames
("No response received after 1 retries … >>>>> send: 0xf0 0x3 …") and every failed connect at
WARNING, naming neither our bus nor the device. The transports report all of that themselves
(reason keywords, one log line per transport), so the libraries' loggers are set to CRITICAL the
first time a transport is created -- unless a logger already has a level of its own, which means
somebody asked for it. :func:`library_debug` turns their debug output (frame dumps) on.
"""

from __future__ import annotations

import logging

LIBRARY_LOGGERS = ("pymodbus", "serial_asyncio_fast", "serial")
"""Loggers of the libraries under the transports."""


def quiet_library_logs() -> None:
    """Silence library loggers that nobody configured (level NOTSET)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.CRITICAL)


def library_debug(enabled: bool = True) -> None:
    """Turn the libraries' debug logging (pymodbus frame dumps) on, or back off.

    Args:
        enabled: True for DEBUG, False for CRITICAL.
    """
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if enabled else logging.CRITICAL)
