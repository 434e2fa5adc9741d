"""What the serial and Modbus stacks raise, mapped onto :mod:`drivers.errors` in one place.

Both transports (:mod:`drivers.transport.modbus`, :mod:`drivers.transport.serial_line`) send
every exception through here, so a reading's reason keyword does not depend on which library
raised (docs/protocols.md §8).

Opening a serial port, what raises what (pyserial 3.5 on Linux, [checked]):

* a missing path: ``SerialException(errno ENOENT, "could not open port …")``;
* a path that is not a terminal (``/dev/null``, a regular file): ``tcgetattr`` fails with
  ``ENOTTY``, wrapped as ``SerialException("Could not configure port: (25, …)")`` whose
  ``__context__`` is the ``termios.error``;
* a line setting the driver cannot do: the kernel driver silently keeps its own value (a pty
  forces 8 data bits and no parity), and glibc's ``tcsetattr`` reads the settings back and fails
  with ``EINVAL`` **only when none of the requested changes took effect** -- so the same
  ``parity="E"`` is silently dropped when other flags change with it (a port's first open) and
  raises a bare ``termios.error(22, 'Invalid argument')`` otherwise. Both asyncio transports
  set ``timeout = 0`` right after opening, which reconfigures the port once more and so always
  raises there -- after the port was opened, which then stayed open (and ``flock``-ed) until the
  exception was collected. pyserial does not wrap that error and pymodbus's ``connect()``
  catches only ``OSError``, so it escaped the drivers raw. Hence :func:`open_serial` (open,
  reconfigure, read back, close again on any failure) and :func:`find_refused_settings` (which
  setting);
* an exclusive lock held by another program: ``SerialException(EWOULDBLOCK, "Could not
  exclusively lock port …")``;
* a custom baud rate the driver refuses: ``ValueError("Failed to set custom baud rate …")``.

pymodbus's ``connect()`` returns ``False`` for every ``OSError`` and logs the cause only;
:func:`diagnose_serial_open` and :func:`diagnose_tcp_connect` find it again by trying once more
with pyserial or a plain socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import termios
from collections.abc import Iterator
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import serial
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.errors import (
    BusDisconnectedError,
    DeviceTimeoutError,
    DriverError,
    LineSettingRefusedError,
    OpenFailedError,
    ProtocolError,
    RefusedSetting,
    as_driver_error,
)

_NOT_FOUND = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_DENIED = frozenset({errno.EACCES, errno.EPERM})
_BUSY = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})
_CMSPAR = getattr(termios, "CMSPAR", 0o10000000000)
_SIZES = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
_SETTINGS = ("baudrate", "bytesize", "parity", "stopbits")
_E = TypeVar("_E", bound=BaseException)


class SerialSettings(Protocol):
    """The line settings both serial transports configure (pydantic settings satisfy it)."""

    @property
    def port(self) -> str:
        """Device path or pyserial URL."""
        ...

    @property
    def baudrate(self) -> int:
        """Bits per second."""
        ...

    @property
    def bytesize(self) -> int:
        """Data bits."""
        ...

    @property
    def parity(self) -> str:
        """``"N"``, ``"E"`` or ``"O"``."""
        ...

    @property
    def stopbits(self) -> int:
        """1 or 2."""
        ...


def is_url(port: str) -> bool:
    """True for a pyserial URL (``socket://``, ``rfc2217://`` ...), False for a device path."""
    return "://" in port


def socket_address(port: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``socket://host:port`` URL, else ``None``."""
    url = urlsplit(port)
    if url.scheme == "socket" and url.hostname and url.port:
        return url.hostname, url.port
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def error_number(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of the ``OSError`` / ``termios.error`` it wraps."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno:
            return int(item.errno)
        if isinstance(item, termios.error) and item.args and isinstance(item.args[0], int):
            return int(item.args[0])
    return None


def detail(exc: BaseException) -> str:
    """Short text of the innermost cause: ``"termios: Invalid argument"``, ``"Permission denied"``.

    pyserial wraps the OS error in a ``SerialException`` whose text repeats the path; the
    innermost error's own text is what an operator needs.
    """
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, termios.error) and len(item.args) >= 2:
            return f"termios: {item.args[1]}"
    for item in reversed(chain):
        if isinstance(item, OSError) and item.strerror:
            return str(item.strerror)
    return str(exc) or type(exc).__name__


def serial_open_error(exc: BaseException, label: str, port: str) -> OpenFailedError:
    """Classify an exception raised while opening serial ``port`` (no probing).

    A refused line setting comes back as a generic ``line_setting_refused``; callers that may
    touch the port refine it with :func:`find_refused_settings`.
    """
    if isinstance(exc, OpenFailedError):
        return exc
    code = error_number(exc)
    why = detail(exc)
    if code in _NOT_FOUND:
        missing = "does not exist" if code == errno.ENOENT else "has no device behind it"
        return OpenFailedError("port_not_found", f"{label}: {port} {missing} ({why})")
    if code in _DENIED:
        return OpenFailedError(
            "permission_denied",
            f"{label}: no permission to open {port} ({why}); the service's user needs "
            "read-write access to it (e.g. membership of its group, often 'dialout')",
        )
    if code in _BUSY:
        return OpenFailedError("port_busy", f"{label}: {port} is in use by another program ({why})")
    if code == errno.ENOTTY:
        return OpenFailedError("not_a_serial_port", f"{label}: {port} is not a serial port ({why})")
    if code == errno.EINVAL or isinstance(exc, (termios.error, ValueError)):
        return OpenFailedError(
            "line_setting_refused", f"{label}: {port} refused its line settings ({why})"
        )
    if isinstance(exc, OSError) and (tcp := _tcp_keyword(exc)) is not None:
        return OpenFailedError(tcp, f"{label}: cannot connect to {port} ({why})")
    return OpenFailedError("open_failed", f"{label}: cannot open {port} ({why})")


def _tcp_keyword(exc: BaseException) -> str | None:
    if isinstance(exc, socket.gaierror):
        return "host_not_found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if error_number(exc) in _UNREACHABLE:
        return "unreachable"
    return None


def tcp_connect_error(exc: BaseException, label: str, host: str, port: int) -> OpenFailedError:
    """Classify an exception raised while connecting to ``host:port``."""
    if isinstance(exc, OpenFailedError):
        return exc
    keyword = _tcp_keyword(exc) or "open_failed"
    why = detail(exc)
    texts = {
        "host_not_found": f"host {host!r} not found ({why})",
        "connection_refused": f"nothing listens on {host}:{port}",
        "connect_timeout": f"{host}:{port} did not accept the connection in time",
        "unreachable": f"{host}:{port} is unreachable ({why})",
        "open_failed": f"cannot connect to {host}:{port} ({why})",
    }
    return OpenFailedError(keyword, f"{label}: {texts[keyword]}")


async def diagnose_tcp_connect(
    label: str, host: str, port: int, timeout_s: float
) -> OpenFailedError:
    """Why connecting to ``host:port`` fails: try once with a plain socket and classify.

    Used after pymodbus's ``connect()`` returned ``False`` (it logs the cause but does not
    return it). When the second try succeeds, the first failure's cause is unknown.
    """
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        return tcp_connect_error(exc, label, host, port)
    writer.close()
    with contextlib.suppress(OSError):  # the peer may reset a probe connection
        await writer.wait_closed()
    return OpenFailedError(
        "open_failed",
        f"{label}: cannot connect to {host}:{port} (the connection was refused "
        "by the Modbus client; a second try succeeded)",
    )


def _read_back(fd: int) -> dict[str, object]:
    """The line settings a port has now (``tcgetattr``); baudrate as its termios constant."""
    _, _, cflag, _, ispeed, _, _ = termios.tcgetattr(fd)
    if not cflag & termios.PARENB:
        parity = "N"
    elif cflag & _CMSPAR:
        parity = "M" if cflag & termios.PARODD else "S"
    else:
        parity = "O" if cflag & termios.PARODD else "E"
    return {
        "baudrate": ispeed,
        "bytesize": _SIZES.get(cflag & termios.CSIZE, 0),
        "parity": parity,
        "stopbits": 2 if cflag & termios.CSTOPB else 1,
    }


def _speed_name(constant: object) -> object:
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit() and getattr(termios, name) == constant:
            return int(name[1:])
    return constant


def unapplied_settings(fd: int, settings: SerialSettings) -> list[RefusedSetting]:
    """Settings the open port does not have although the open succeeded (read back).

    A kernel driver may keep its own value without an error (a pty ignores parity and 7 data
    bits); glibc fails only when *nothing* requested took effect. A custom baud rate (no
    termios constant) is not compared.
    """
    actual = _read_back(fd)
    refused: list[RefusedSetting] = []
    for name in _SETTINGS:
        wanted: object = getattr(settings, name)
        have = actual[name]
        if name == "baudrate":
            constant = getattr(termios, f"B{wanted}", None)
            if constant is None or have == constant:
                continue
            have = _speed_name(have)
        elif have == wanted:
            continue
        refused.append(RefusedSetting(name, wanted, f"the port keeps {have!r}", silently=True))
    return refused


def find_refused_settings(settings: SerialSettings) -> list[RefusedSetting]:
    """Which line settings ``settings.port`` refuses: open it plainly, then apply one at a time.

    Blocking (run it in a thread). Opens the port at the configured baud rate with 8N1, then
    sets each other setting that differs from 8N1 and reads the port back; a setting that
    raises or does not stick is refused and put back before the next is tried. When even the
    plain open fails, the baud rate is tried alone at 9600 to tell a refused rate from a dead
    port; an empty list means the failure is not about one setting.
    """
    base: dict[str, object] = {"bytesize": 8, "parity": "N", "stopbits": 1}
    try:
        port = serial.Serial(settings.port, baudrate=settings.baudrate)  # 8N1 by default
    except (serial.SerialException, termios.error, ValueError) as exc:
        if settings.baudrate != 9600 and _opens(settings.port, 9600):
            return [RefusedSetting("baudrate", settings.baudrate, detail(exc))]
        return []
    refused: list[RefusedSetting] = []
    try:
        for name in ("bytesize", "parity", "stopbits"):
            wanted: object = getattr(settings, name)
            if wanted == base[name]:
                continue
            try:
                setattr(port, name, wanted)
            except (serial.SerialException, termios.error, ValueError) as exc:
                refused.append(RefusedSetting(name, wanted, detail(exc)))
            else:
                have = _read_back(_fd(port))[name]
                if have == wanted:
                    continue
                refused.append(
                    RefusedSetting(name, wanted, f"the port keeps {have!r}", silently=True)
                )
            _restore(port, name, base[name])
    finally:
        port.close()
    return refused


def _fd(port: serial.Serial) -> int:
    fd = getattr(port, "fd", None)
    if not isinstance(fd, int):
        raise ValueError(f"{port.port} has no file descriptor")
    return fd


def _opens(path: str, baudrate: int) -> bool:
    try:
        serial.Serial(path, baudrate=baudrate).close()
    except (serial.SerialException, termios.error, ValueError):
        return False
    return True


def _restore(port: serial.Serial, name: str, value: object) -> None:
    # nothing was applied, so this asks for no change and pyserial skips tcsetattr
    with contextlib.suppress(serial.SerialException, termios.error, ValueError):
        setattr(port, name, value)


def release(exc: _E) -> _E:
    """Drop the tracebacks of ``exc``'s chain, so objects its frames held are freed now.

    A port opened inside a constructor that then raised stays open (and locked) for as long as
    a traceback references that frame.
    """
    for item in _chain(exc):
        item.__traceback__ = None
    return exc


def open_serial(
    settings: SerialSettings, label: str, *, exclusive: bool, check: bool
) -> serial.Serial:
    """Open a serial device path as the transports need it, or raise a classified error.

    Blocking (run it in a thread). Opens with the line settings, sets ``timeout = 0`` (what
    both asyncio transports do next; it reconfigures the port, which fails when a setting did
    not take), reads the settings back if ``check``, and closes the port again on any failure.

    Args:
        settings: Port and line settings.
        label: ``"line NAME"`` / ``"bus NAME"`` for messages.
        exclusive: Take an exclusive ``flock`` on the port.
        check: Refuse the port when a setting reads back differently.

    Raises:
        OpenFailedError: With the cause's keyword; ``LineSettingRefusedError`` naming the
            setting(s) when the port refused or dropped one.
    """
    try:
        port = serial.Serial(
            settings.port,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            exclusive=exclusive,
        )
    except Exception as exc:  # SerialException, termios.error, ValueError
        error = serial_open_error(release(exc), label, settings.port)
        raise refine_setting_error(error, settings, label) from exc
    try:
        port.timeout = 0
        port.write_timeout = 0
        refused = unapplied_settings(_fd(port), settings) if check else []
    except Exception as exc:
        port.close()
        error = serial_open_error(release(exc), label, settings.port)
        raise refine_setting_error(error, settings, label) from exc
    if refused:
        port.close()
        raise LineSettingRefusedError(label, settings.port, refused)
    return port


def diagnose_serial_open(settings: SerialSettings, label: str) -> OpenFailedError:
    """Why serial ``settings.port`` does not open: try once with pyserial and classify.

    Blocking (run it in a thread). Used after pymodbus's ``connect()`` failed.
    """
    try:
        open_serial(settings, label, exclusive=True, check=False).close()
    except OpenFailedError as exc:
        return exc
    return OpenFailedError(
        "open_failed", f"{label}: cannot open {settings.port} (a second try succeeded)"
    )


def refine_setting_error(
    error: OpenFailedError, settings: SerialSettings, label: str
) -> OpenFailedError:
    """A generic ``line_setting_refused`` made precise by :func:`find_refused_settings`.

    Blocking (run it in a thread).
    """
    if error.keyword != "line_setting_refused" or isinstance(error, LineSettingRefusedError):
        return error
    refused = find_refused_settings(settings)
    if not refused:
        return error
    return LineSettingRefusedError(label, settings.port, refused)


def runtime_error(exc: Exception, label: str, what: str) -> DriverError:
    """Map an exception raised by a request on an open transport.

    Args:
        exc: What the library raised.
        label: ``"bus rs485-gw"`` / ``"line o2-uart"``.
        what: The request (``"unit 240 FC03 @0+6"``, ``"'A'"``).
    """
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, ConnectionException):
        return BusDisconnectedError(f"{label}: connection lost during {what} ({exc})")
    if isinstance(exc, ModbusIOException):
        return DeviceTimeoutError(f"{label}: no valid reply to {what} ({exc})")
    if isinstance(exc, TimeoutError):
        return DeviceTimeoutError(f"{label}: no reply to {what} in time")
    if isinstance(exc, ModbusException):
        return ProtocolError(f"{label}: {what}: {exc}")
    if isinstance(exc, (OSError, termios.error)):
        return BusDisconnectedError(f"{label}: {what} failed ({detail(exc)})")
    if isinstance(exc, (ValueError, IndexError, KeyError, TypeError)):
        return ProtocolError(f"{label}: {what}: unexpected data ({type(exc).__name__}: {exc})")
    return as_driver_error(exc, label)


__all__ = [
    "SerialSettings",
    "detail",
    "diagnose_serial_open",
    "diagnose_tcp_connect",
    "error_number",
    "find_refused_settings",
    "is_url",
    "open_serial",
    "refine_setting_error",
    "release",
    "runtime_error",
    "serial_open_error",
    "socket_address",
    "tcp_connect_error",
    "unapplied_settings",
]
