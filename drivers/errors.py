"""Exceptions raised by transports and drivers.

Measurement paths never let these escape: a driver turns them into a BAD :class:`Reading` whose
``reason`` starts with a stable keyword, so alarms can group them:

=================== ===========================================================
reason prefix       meaning
=================== ===========================================================
``timeout``         the device did not answer (or answered with a corrupt frame)
``disconnected``    the bus / serial line is not open and could not be reopened
``modbus exception`` the device answered with a Modbus exception code
``protocol error``  a reply arrived but could not be parsed or was a device error reply
``nan``, ``sentinel``, ``not available`` the device marks the value as missing
``status``          the device's own status says the value is not valid
``out of range``    the value is outside the configured valid range
``stale``           (quality STALE) the newest value is older than the allowed age
=================== ===========================================================

Actuator paths (setpoints, relays) do raise: :class:`WriteVerifyError` when the read-back does not
match, and any :class:`TransportError` when the command could not be delivered.
"""

from __future__ import annotations

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


class DriverError(Exception):
    """Base class of everything the driver layer raises."""

    reason_prefix = "error"

    @property
    def reason(self) -> str:
        """Text for :attr:`drivers.reading.Reading.reason`, starting with a stable prefix."""
        text = str(self)
        if text.startswith(self.reason_prefix):
            return text
        return f"{self.reason_prefix}: {text}"


class TransportError(DriverError):
    """A request could not be completed on the wire."""


class DeviceTimeoutError(TransportError):
    """No (valid) reply within the timeout; on RTU a bad-CRC reply looks the same."""

    reason_prefix = "timeout"


class BusDisconnectedError(TransportError):
    """The bus or serial line is closed and could not be (re)opened yet."""

    reason_prefix = "disconnected"


class ModbusDeviceError(TransportError):
    """The device answered with a Modbus exception response.

    Attributes:
        code: Modbus exception code (1 illegal function, 2 illegal address, ...).
    """

    reason_prefix = "modbus exception"

    def __init__(self, code: int, context: str = "") -> None:
        self.code = code
        name = MODBUS_EXCEPTION_NAMES.get(code, "unknown")
        where = f" ({context})" if context else ""
        super().__init__(f"modbus exception {code} {name}{where}")


class ProtocolError(DriverError):
    """A reply arrived but was malformed, unexpected, or an explicit device error reply."""

    reason_prefix = "protocol error"


class WriteVerifyError(DriverError):
    """An actuator write was acknowledged but the read-back differs from the request.

    Attributes:
        device: Driver name of the device.
        quantity: What was written, e.g. ``"setpoint_lpm"`` or ``"relay 3"``.
        requested: The value that was written.
        readback: The value read back afterwards.
    """

    reason_prefix = "write verify failed"

    def __init__(self, device: str, quantity: str, requested: object, readback: object) -> None:
        self.device = device
        self.quantity = quantity
        self.requested = requested
        self.readback = readback
        super().__init__(
            f"write verify failed on {device}: {quantity} requested {requested!r}, "
            f"read back {readback!r}"
        )
