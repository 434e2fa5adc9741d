"""Fault injection shared by every simulated device.

Each simulator owns one :class:`Faults`; tests and demos flip its switches at any time:

==================== =====================================================================
switch               effect on the wire
==================== =====================================================================
``no_reply``         the device stays silent (Modbus: no response; ASCII: no reply, no stream)
``dropout(s)``       like ``no_reply`` for ``s`` seconds, then recovers by itself
``garble``           replies are corrupted: RTU -> bad CRC; Modbus TCP -> truncated frame;
                     ASCII -> digits replaced by ``#``
``stuck``            measured values freeze at their value when the fault began; actuator
                     writes are acknowledged but have no effect (welded relay, dead valve)
``start_drift(r)``   the primary measurement drifts by ``r`` units per second from now on
``exception_code``   Modbus only: every request is answered with this exception (e.g. 4)
disconnect           a method of the *server* (:meth:`ModbusBusSim.disconnect_clients`,
                     :meth:`AsciiPortSim.disconnect`): drops the client connections
==================== =====================================================================

Device-specific faults (sentinels, status codes, NaN) are attributes of each simulator.
"""

from __future__ import annotations

import math

from common.clock import DEFAULT_CLOCK, Clock


class Faults:
    """Fault switches of one simulated device.

    Args:
        clock: Time source for dropouts and drift.

    Attributes:
        no_reply: Stay silent.
        garble: Corrupt replies.
        stuck: Freeze measurements, ignore actuator writes.
        exception_code: Modbus exception code to answer with, or ``None``.
    """

    def __init__(self, clock: Clock = DEFAULT_CLOCK) -> None:
        self.clock = clock
        self.no_reply = False
        self.garble = False
        self.stuck = False
        self.exception_code: int | None = None
        self._dropout_until = -math.inf
        self._drift_per_s = 0.0
        self._drift_since = 0.0
        self._frozen: dict[str, float] = {}

    def dropout(self, seconds: float) -> None:
        """Be silent for ``seconds`` from now, then answer again."""
        self._dropout_until = self.clock.monotonic() + seconds

    def start_drift(self, per_s: float) -> None:
        """Let the primary measurement drift by ``per_s`` (its unit) per second from now."""
        self._drift_per_s = per_s
        self._drift_since = self.clock.monotonic()

    @property
    def silent(self) -> bool:
        """True while the device must not answer."""
        return self.no_reply or self.clock.monotonic() < self._dropout_until

    def drift(self) -> float:
        """Accumulated drift offset now."""
        if not self._drift_per_s:
            return 0.0
        return self._drift_per_s * (self.clock.monotonic() - self._drift_since)

    def measure(self, key: str, value: float, *, primary: bool = True) -> float:
        """Apply drift (primary quantities only) and stuck-at to a measured ``value``."""
        if primary:
            value += self.drift()
        if not self.stuck:
            self._frozen.pop(key, None)
            return value
        return self._frozen.setdefault(key, value)

    def clear(self) -> None:
        """Remove every fault."""
        self.no_reply = self.garble = self.stuck = False
        self.exception_code = None
        self._dropout_until = -math.inf
        self._drift_per_s = 0.0
        self._frozen.clear()


def garble_text(line: str) -> str:
    """Corrupt an ASCII line the way line noise would: digits become ``#``."""
    return "".join("#" if ch.isdigit() else ch for ch in line)
