"""An in-process null-modem cable made of two pty pairs, for serial-port tests without hardware.

Bytes written to one slave device come out of the other; baud rate and parity are ignored.
One end can be given to a simulator (e.g. ``ModbusBusSim(serial_port=a)``) and the other to a
driver, so the driver's real serial code path (termios, ``add_reader``) is exercised.
(docs/protocols.md §6: opening ``/proc/self/fd/<master>`` does not reach the same pty, hence
two pairs and a bridge.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty


class PtyNullModem:
    """Two cross-connected pty pairs.

    Usage::

        async with PtyNullModem() as (end_a, end_b):
            ...  # open end_a in the simulator, end_b in the driver
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._masters: tuple[int, int] | None = None
        self.paths: tuple[str, str] = ("", "")

    async def open(self) -> tuple[str, str]:
        """Create the pairs and start bridging; returns the two slave device paths."""
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        self._fds = [m1, s1, m2, s2]
        for slave in (s1, s2):
            tty.setraw(slave)
        for master in (m1, m2):
            os.set_blocking(master, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(m1, self._copy, m1, m2)
        loop.add_reader(m2, self._copy, m2, m1)
        self._masters = (m1, m2)
        self.paths = (os.ttyname(s1), os.ttyname(s2))
        return self.paths

    async def close(self) -> None:
        """Stop bridging and close all four descriptors."""
        if self._masters is not None:
            loop = asyncio.get_running_loop()
            for master in self._masters:
                loop.remove_reader(master)
            self._masters = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    async def __aenter__(self) -> tuple[str, str]:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @staticmethod
    def _copy(source: int, target: int) -> None:
        try:
            data = os.read(source, 4096)
        except OSError:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(target, data)
