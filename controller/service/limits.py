"""What a site may ask of the wire and of this machine: a site too big fails with a clear message.

Every limit a site's size can reach is checked before anything moves, and reported as a
:class:`~common.config_errors.ConfigError` (``FILE: FIELD: problem; allowed: …``), never as a
traceback from deep inside a library. Limits checked elsewhere:

* the cycle's time budget per bus and line (timeouts x transactions): ``budget.py``, at load;
* Modbus unit ids 1-247 and one per bus, unique reactor and device ids, id lengths (so topic
  names, MQTT client ids and file names stay short): the site file's models, at load;
* MQTT client ids and the recorder's spool file name, however many reactors: bounded by
  ``common/names.py`` (a hash past 64 characters).

Checked here:

* **wire time** (at load): a Modbus RTU serial bus carries one transaction at a time, and each
  takes at least its frames' time on the wire at the line's baud rate, whatever the timeout;
* **the control socket's path** (at load): a Unix socket path holds at most 107 bytes;
* **open files** (at start): the process needs a descriptor per bus connection and serial line
  besides its databases, broker and page connections; the soft ``ulimit -n`` is raised to what is
  needed when the hard limit allows, otherwise the start is refused;
* **ports** (at start): the embedded broker's port must be free.
"""

from __future__ import annotations

import errno
import math
import resource
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from common.config_errors import ConfigError
from controller.service.budget import CYCLE_DEADLINE_SHARE, TransportLoad
from drivers.transport.settings import ModbusBusSettings, ModbusRtuSettings

if TYPE_CHECKING:
    from controller.service.site import SiteConfig

UNIX_SOCKET_PATH_MAX = 107
"""Bytes of a Unix socket's path (``sun_path`` is 108 bytes on Linux, with the closing NUL)."""

RTU_MIN_CHARS = 8 + 7 + 2 * 3.5
"""Characters of the shortest Modbus RTU transaction on the wire: an 8-byte request, a 7-byte
reply (one register) and the 3.5-character silence that ends each frame."""

BASE_OPEN_FILES = 128
"""Descriptors besides the transports: interpreter and libraries, the journal, audit trail,
spool and store (each with its WAL and shared-memory files), MQTT, the embedded broker's and the
operator page's clients, the control socket."""


def bits_per_char(settings: ModbusRtuSettings) -> int:
    """Start bit, data bits, parity bit (if any) and stop bits of one character."""
    return 1 + settings.bytesize + (0 if settings.parity == "N" else 1) + settings.stopbits


def rtu_transaction_min_s(settings: ModbusRtuSettings) -> float:
    """The shortest time one transaction can take on the wire of an RTU bus, s."""
    return RTU_MIN_CHARS * bits_per_char(settings) / settings.baudrate


def wire_time_problem(load: TransportLoad, settings: ModbusBusSettings) -> str | None:
    """Why an RTU serial bus cannot carry its transactions in the cycle deadline, or ``None``.

    A bus reached through a TCP serial server (``socket://``) is not checked: its serial side's
    baud rate is the server's setting, not the site file's.
    """
    if not isinstance(settings, ModbusRtuSettings) or settings.port.startswith("socket://"):
        return None
    per_tx_s = rtu_transaction_min_s(settings)
    if load.transactions * per_tx_s <= load.deadline_s:
        return None
    most = max(0, math.floor(load.deadline_s / per_tx_s))
    return (
        f"{load.transactions} transactions per cycle take at least {load.transactions} x "
        f"{per_tx_s * 1000:.1f} ms = {load.transactions * per_tx_s:.2f} s on the wire at "
        f"{settings.baudrate} baud ({bits_per_char(settings)} bits a character), more than the "
        f"cycle deadline {load.deadline_s:.2f} s ({CYCLE_DEADLINE_SHARE:g} x the control period)"
        f" (allowed: at most {most} transactions per cycle on this bus at this baud rate; a "
        "faster baud rate, or the devices split over more buses)"
    )


def socket_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a Unix socket (too long), or ``None``."""
    size = len(str(path).encode())
    if size <= UNIX_SOCKET_PATH_MAX:
        return None
    return (
        f"{path} is {size} bytes long, too long for a Unix socket (allowed: a path of at most "
        f"{UNIX_SOCKET_PATH_MAX} bytes: a shorter state_dir, or control_socket set to a short "
        "path such as /run/hypoxia/SITE.sock)"
    )


def open_files_needed(buses: Iterable[ModbusBusSettings], lines: int) -> int:
    """Descriptors a controller process needs for its transports and everything else."""
    connections = sum(int(getattr(b, "connections", 1)) for b in buses)
    return BASE_OPEN_FILES + connections + lines


def ensure_open_files(needed: int, source: str = "site file") -> int:
    """Raise the soft limit on open files to ``needed`` if it is lower; returns the soft limit.

    Raises:
        ConfigError: The hard limit is below ``needed`` (only an administrator may raise it).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return int(soft)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            source,
            "buses",
            f"the site needs about {needed} open files (its bus connections and serial lines, "
            f"plus {BASE_OPEN_FILES} for databases, MQTT and the page), but this process may "
            f"open at most {hard} (ulimit -n, hard limit) (allowed: a hard limit of at least "
            f"{needed}, e.g. LimitNOFILE={needed} in the systemd unit, or fewer buses per "
            "controller process)",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


def port_problem(host: str, port: int) -> str | None:
    """Why a server cannot listen on ``host:port`` (in use, or no such address), or ``None``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"{host}:{port}: {exc} (allowed: an address of this host)"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            return (
                f"cannot listen on {host}:{port}: {why} (allowed: a port no other program "
                "listens on — is another `hypoxia run` of this site still running?)"
            )
    return None


def check_start(site: SiteConfig, source: str) -> None:
    """The checks that depend on this machine, made before a service opens anything.

    Raises:
        ConfigError: Too few open files allowed, or the embedded broker's port is taken.
    """
    ensure_open_files(open_files_needed(site.buses.values(), len(site.lines)), source)
    if site.broker.embedded:
        problem = port_problem(site.broker.host, site.broker.port)
        if problem is not None:
            raise ConfigError(source, "broker.port", problem)
