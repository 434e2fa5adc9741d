"""Exceptions raised by transports and drivers, and the reason keywords of BAD readings.

Measurement paths never let an exception escape: a driver turns every failure into a BAD
:class:`~drivers.reading.Reading` whose ``reason`` is ``"<keyword>: <message>"``. The keyword is
one of :data:`REASON_KEYWORDS` (stable: alarms and dashboards may group by it,
:attr:`drivers.reading.Reading.keyword`); the message names the bus or line (``line o2-uart``,
``bus rs485-gw``) and, for a refused line setting, the setting. docs/protocols.md §8 lists the
keywords with what raises them and what to do.

Actuator paths (setpoints, relays) do raise: :class:`WriteVerifyError` when the read-back does not
match, and any :class:`TransportError` when the command could not be delivered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

_LOG = logging.getLogger(__name__)

REASON_KEYWORDS: dict[str, str] = {
    # the transport could not be opened (the keyword stays while it is down)
    "port_not_found": "the serial device path does not exist (unplugged USB adapter, wrong path)",
    "permission_denied": "the service's user may not open the serial device",
    "port_busy": "another program holds the serial port (exclusive lock)",
    "not_a_serial_port": "the path exists but is not a terminal (a regular file, /dev/null)",
    "line_setting_refused": "the port refused or silently dropped a line setting",
    "connection_refused": "nothing listens at the TCP host and port",
    "host_not_found": "the host name does not resolve",
    "unreachable": "no route to the host or network",
    "connect_timeout": "opening the port or connection took longer than allowed",
    "open_failed": "the port or connection could not be opened for another reason",
    # run time
    "disconnected": "the connection was lost or the transport was closed",
    "timeout": "the device did not answer (or answered with a corrupt frame)",
    "exception_response": "the device answered with a Modbus exception code",
    "protocol_error": "a reply arrived but was malformed, unexpected or a device error reply",
    "internal_error": "unexpected exception inside a driver (a bug; logged with its traceback)",
    # values
    "nan": "the device marks the value as not valid (NaN)",
    "sentinel": "the device marks the value as missing with a sentinel number",
    "not_available": "the device has no such value (no barometer, a meter has no setpoint)",
    "status": "the device's own status says the value is not valid",
    "out_of_range": "the value is outside the valid range",
    "stale": "(quality STALE) the newest value is older than allowed",
    "gas_mismatch": "a flow controller reports another gas than the site file states",
    # actuators and start-up checks
    "write_verify_failed": "an actuator write was acknowledged but reads back differently",
    "gas_select_refused": "the flow controller refused to select the gas",
    "full_scale_mismatch": "the flow controller reports another full scale than configured",
}
"""Every keyword a reading's reason may start with, and what it means."""

MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def reason_keyword(reason: str) -> str:
    """The keyword a reason starts with (``""`` for an empty reason)."""
    return reason.partition(":")[0].strip()


class DriverError(Exception):
    """Base class of everything the driver layer raises.

    Args:
        message: What happened, naming the bus or line; without the keyword.
        keyword: Overrides the class's keyword (one of :data:`REASON_KEYWORDS`).
    """

    keyword = "internal_error"

    def __init__(self, message: str = "", *, keyword: str | None = None) -> None:
        super().__init__(message)
        if keyword is not None:
            self.keyword = keyword

    @property
    def message(self) -> str:
        """The text without the keyword."""
        text = str(self)
        prefix = self.keyword + ":"
        return text.removeprefix(prefix).strip() if text.startswith(prefix) else text

    @property
    def reason(self) -> str:
        """Text for :attr:`drivers.reading.Reading.reason`: ``"<keyword>: <message>"``."""
        return f"{self.keyword}: {self.message}"


class InternalError(DriverError):
    """An exception no transport or driver expected (a bug); the reading is BAD, not lost."""

    keyword = "internal_error"


class TransportError(DriverError):
    """A request could not be completed on the wire."""

    keyword = "disconnected"


class DeviceTimeoutError(TransportError):
    """No (valid) reply within the timeout; on RTU a bad-CRC reply looks the same."""

    keyword = "timeout"


class BusDisconnectedError(TransportError):
    """The bus or serial line is closed, was lost, or could not be (re)opened yet.

    While a transport is down for a known cause the keyword is that cause's (``port_not_found``
    ...), so a reading's reason keeps one keyword for the whole outage.
    """

    keyword = "disconnected"


class OpenFailedError(BusDisconnectedError):
    """Opening a bus or line failed; the keyword names the cause.

    Args:
        keyword: One of the open keywords of :data:`REASON_KEYWORDS` (``port_not_found`` ...).
        message: What happened, naming the bus or line and the port.
    """

    def __init__(self, keyword: str, message: str) -> None:
        super().__init__(message, keyword=keyword)


@dataclass(frozen=True, slots=True)
class RefusedSetting:
    """One line setting a serial port did not take.

    Attributes:
        setting: ``"baudrate"``, ``"bytesize"``, ``"parity"`` or ``"stopbits"``.
        value: The configured value.
        detail: Why: the error text (``"termios: Invalid argument"``) or what the port kept.
        silently: True when the port accepted the call but kept another value (read back).
    """

    setting: str
    value: object
    detail: str
    silently: bool = False

    def describe(self, port: str) -> str:
        """``"parity 'E' refused by /dev/ttyUSB0 (termios: Invalid argument)"``."""
        verb = "not applied by" if self.silently else "refused by"
        return f"{self.setting} {self.value!r} {verb} {port} ({self.detail})"


class LineSettingRefusedError(OpenFailedError):
    """A serial port refused (or silently dropped) one or more line settings.

    Attributes:
        label: ``"line o2-uart"`` or ``"bus rs485-local"``.
        port: The device path.
        refused: The settings the port did not take, in the order checked.
    """

    def __init__(self, label: str, port: str, refused: list[RefusedSetting]) -> None:
        if not refused:
            raise ValueError("need at least one refused setting")
        self.label = label
        self.port = port
        self.refused = tuple(refused)
        parts = "; ".join(r.describe(port) for r in self.refused)
        super().__init__("line_setting_refused", f"{label}: {parts}")

    @property
    def setting(self) -> str:
        """The first refused setting's name."""
        return self.refused[0].setting


class ModbusDeviceError(TransportError):
    """The device answered with a Modbus exception response.

    Attributes:
        code: Modbus exception code (1 illegal function, 2 illegal address, ...).
    """

    keyword = "exception_response"

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown")
        where = f" ({context})" if context else ""
        super().__init__(f"modbus exception {code} {name}{where}")


class ProtocolError(DriverError):
    """A reply arrived but was malformed, unexpected, or an explicit device error reply."""

    keyword = "protocol_error"


class WriteVerifyError(DriverError):
    """An actuator write was acknowledged but the read-back differs from the request.

    Attributes:
        device: Driver name of the device.
        quantity: What was written, e.g. ``"setpoint_lpm"`` or ``"relay 3"``.
        requested: The value that was written.
        readback: The value read back afterwards.
    """

    keyword = "write_verify_failed"

    def __init__(self, device: str, quantity: str, requested: object, readback: object) -> None:
        self.device = device
        self.quantity = quantity
        self.requested = requested
        self.readback = readback
        super().__init__(
            f"{device}: {quantity} requested {requested!r}, read back {readback!r}",
        )


_REPORTED: set[tuple[str, str]] = set()


def as_driver_error(exc: Exception, where: str) -> DriverError:
    """``exc`` itself when it is a :class:`DriverError`, else an :class:`InternalError`.

    The last line of defence of every ``read_*``: nothing escapes a driver as a raw exception.
    An unexpected exception is logged with its traceback once per place and type.

    Args:
        exc: What was caught.
        where: The device (and its bus or line), for the message and the log.
    """
    if isinstance(exc, DriverError):
        return exc
    key = (where, type(exc).__name__)
    if key not in _REPORTED:
        _REPORTED.add(key)
        _LOG.error("%s: unexpected %s", where, type(exc).__name__, exc_info=exc)
    return InternalError(f"{where}: unexpected {type(exc).__name__}: {exc}")
