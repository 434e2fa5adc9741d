"""The cycle's time budget: every bus and line fits its worst case inside the cycle deadline.

Worst case, per transport (a Modbus bus or an ASCII line) and per control cycle: every transaction
of every device on it times out on every try. Devices on one transport wait for each other (one
client per bus, one line per port); different transports work concurrently, reads and writes
alike. So the cycle's I/O takes at most the slowest transport's worst case, and that must fit the
cycle deadline (``CYCLE_DEADLINE_SHARE`` of the shortest control period of the reactors using the
transport), which is well inside the watchdog's stall time.

Transactions per cycle, by what a device does for its roles:

| role | per cycle |
|---|---|
| a sensor role (o2, co2, temperature, …) | 1 read (a kind's ``read_transactions`` if more) |
| a CO2 probe fed the measured O2 | + 2 (verified write of the compensation value) |
| a mixer role | 1 read (measured flow) + 2 (verified write: write, read back) |
| heater, harvest_pump | 2 (verified write) |

A transaction's worst case is ``timeout_s x (retries + 1)`` on a Modbus bus and
``reply_timeout_s`` on an ASCII line. A Modbus TCP bus with ``connections = k`` runs k
transactions at a time, so its worst case is ``ceil(transactions / k)`` transactions long.
The site file is refused at load when a transport does not fit, naming the transport, its
transactions and what timeout would fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from drivers.catalog import MIXER_ROLES, SENSOR_ROLES, DeviceConfig, device_roles
from drivers.transport.settings import ModbusBusSettings, SerialLineSettings

CYCLE_DEADLINE_SHARE = 0.8
"""Share of the control period the cycle's I/O may take (reads, then writes)."""

WRITE_TRANSACTIONS = 2
"""A verified write: the write, then the read-back."""


def transactions_per_cycle(device: DeviceConfig) -> int:
    """Worst-case transactions one device costs its transport in one cycle.

    A kind whose reading takes more than one transaction says so with a ``read_transactions``
    class attribute; one that writes something every cycle beside its roles (the measured O2
    pushed to a CO2 probe) with a ``write_transactions()`` method.
    """
    count = 0
    extra = getattr(device, "write_transactions", None)
    if callable(extra):
        count += int(extra())
    for role in device_roles(device):
        if role in SENSOR_ROLES:
            count += int(getattr(device, "read_transactions", 1))
        elif role in MIXER_ROLES:
            count += 1 + WRITE_TRANSACTIONS
        else:  # heater, harvest_pump
            count += WRITE_TRANSACTIONS
    return count


@dataclass(frozen=True, slots=True)
class TransportLoad:
    """One transport's worst case in one cycle."""

    kind: str  # "bus" or "line"
    name: str
    transactions: int
    per_transaction_s: float
    deadline_s: float
    slots: int = 1
    """Transactions in flight at once (a Modbus TCP bus's ``connections``)."""

    @property
    def worst_s(self) -> float:
        """Every transaction timing out on every try, ``slots`` at a time, s."""
        return math.ceil(self.transactions / self.slots) * self.per_transaction_s

    @property
    def fits(self) -> bool:
        """True when the worst case fits the deadline."""
        return self.worst_s <= self.deadline_s + 1e-9

    def problem(self) -> str:
        """Why it does not fit, and what would."""
        setting = "timeout_s x (retries + 1)" if self.kind == "bus" else "reply_timeout_s"
        more = ", or more connections to a Modbus TCP gateway" if self.kind == "bus" else ""
        return (
            f"{self.transactions} transactions per cycle x {self.per_transaction_s:g} s "
            f"= {self.worst_s:.2f} s exceeds the cycle deadline {self.deadline_s:.2f} s "
            f"({CYCLE_DEADLINE_SHARE:g} x the control period) (allowed: {setting} <= "
            f"{self.deadline_s / math.ceil(self.transactions / self.slots):.3f} s, or fewer "
            f"devices on this {self.kind}{more})"
        )


def transport_loads(
    devices: Iterable[tuple[DeviceConfig, float]],
    buses: dict[str, ModbusBusSettings],
    lines: dict[str, SerialLineSettings],
) -> list[TransportLoad]:
    """The load of every transport, from ``(device, control period of its reactor)`` pairs."""
    count: dict[tuple[str, str], int] = {}
    period: dict[tuple[str, str], float] = {}
    for device, period_s in devices:
        bus, line = getattr(device, "bus", None), getattr(device, "line", None)
        key = ("bus", str(bus)) if bus is not None else ("line", str(line))
        count[key] = count.get(key, 0) + transactions_per_cycle(device)
        period[key] = min(period.get(key, period_s), period_s)
    loads: list[TransportLoad] = []
    for (kind, name), transactions in sorted(count.items()):
        slots = 1
        if kind == "bus" and name in buses:
            s = buses[name]
            per_tx = s.timeout_s * (s.retries + 1)
            slots = int(getattr(s, "connections", 1))
        elif kind == "line" and name in lines:
            per_tx = lines[name].reply_timeout_s
        else:
            continue  # an undefined transport is reported by the site's own check
        deadline = CYCLE_DEADLINE_SHARE * period[(kind, name)]
        loads.append(TransportLoad(kind, name, transactions, per_tx, deadline, slots))
    return loads
