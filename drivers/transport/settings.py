"""Plain-data settings of buses and serial lines (pydantic v2, ``extra="forbid"``).

A site file embeds these directly; validation errors name the field and the allowed range.
Timeouts are sized for a ~1 s control cycle: a silent Modbus unit costs at most
``timeout_s * (retries + 1)`` seconds of bus time (0.6 s with the defaults) before the hub starts
skipping it (see :class:`drivers.transport.modbus.ModbusHub`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Parity = Literal["N", "E", "O"]


class _BusTiming(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(0.3, gt=0, le=10, description="reply timeout per try, seconds")
    retries: int = Field(1, ge=0, le=5, description="re-sends after a timeout (per request)")
    reconnect_initial_s: float = Field(
        0.5, ge=0, le=60, description="first reconnect delay after a failed open, seconds"
    )
    reconnect_max_s: float = Field(30.0, ge=0, le=600, description="largest reconnect delay, s")
    unit_skip_after: int = Field(
        2, ge=1, le=100, description="consecutive timeouts before a unit is skipped"
    )
    unit_skip_initial_s: float = Field(
        1.0, ge=0, le=60, description="first skip period of a silent unit, s (0 = never skip)"
    )
    unit_skip_max_s: float = Field(15.0, ge=0, le=600, description="largest skip period, s")


class ModbusTcpSettings(_BusTiming):
    """One Modbus TCP connection (a device, or a TCP-to-RTU gateway serving many unit ids).

    Attributes:
        kind: Discriminator, always ``"tcp"``.
        host: Host name or IP address.
        port: TCP port, 1-65535 (502 is the Modbus default).
        framing: ``"socket"`` (standard Modbus TCP/MBAP) or ``"rtu"`` (RTU frames tunnelled over
            TCP, as cheap serial-to-Ethernet converters do).
        connections: TCP connections the hub keeps to this address, each with one request in
            flight (pymodbus's client waits for each reply before the next request): requests
            of many devices on one gateway run this many at a time. At most what the gateway
            accepts (Modbus TCP gateways typically take 4-32 clients); 1 with ``rtu`` framing,
            whose serial bus behind the gateway carries one transaction at a time.
    """

    kind: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    framing: Literal["socket", "rtu"] = "socket"
    connections: int = Field(1, ge=1, le=32)

    @model_validator(mode="after")
    def _one_connection_for_rtu(self) -> Self:
        if self.framing == "rtu" and self.connections != 1:
            msg = (
                f"connections = {self.connections} with framing = 'rtu': the serial bus behind "
                "the gateway carries one transaction at a time (allowed: 1)"
            )
            raise ValueError(msg)
        return self


class ModbusRtuSettings(_BusTiming):
    """One RS-485 line speaking Modbus RTU.

    Attributes:
        kind: Discriminator, always ``"rtu"``.
        port: Device path (``/dev/ttyUSB0``, ``COM3``) or pyserial URL (``rfc2217://host:port``).
            ``socket://host:port`` (RTU over a TCP serial server) is opened as a TCP socket with
            RTU framing; the serial parameters below are then ignored.
        baudrate: Bits per second (Vaisala default 19200, relay boards and PT100 modules 9600).
        bytesize: Data bits, 7 or 8.
        parity: ``"N"``, ``"E"`` or ``"O"``.
        stopbits: 1 or 2 (Vaisala default 8N2).
        check_line_settings: After opening, read the port's settings back and refuse it
            (``line_setting_refused``) when the driver silently kept another value -- a USB
            adapter or a pty that cannot do 7 data bits or parity (docs/protocols.md §6).
    """

    kind: Literal["rtu"] = "rtu"
    port: str = Field(min_length=1)
    baudrate: int = Field(19200, ge=1200, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    check_line_settings: bool = True


ModbusBusSettings = Annotated[ModbusTcpSettings | ModbusRtuSettings, Field(discriminator="kind")]
"""Either bus kind; pydantic picks the model from ``kind``."""


class SerialLineSettings(BaseModel):
    """One ASCII serial line (a UART/RS-232 port or a multi-drop RS-485 line).

    Attributes:
        port: Device path or pyserial URL (``socket://host:port``).
        baudrate: Bits per second (LuminOx and GSS 9600, Alicat 19200).
        bytesize: Data bits.
        parity: Parity.
        stopbits: Stop bits.
        eol: Terminator appended to commands: CR LF (LuminOx, GSS), CR (Alicat) or LF.
            Incoming lines are split on CR *or* LF, so both conventions are read correctly.
        reply_timeout_s: Default time to wait for a reply line, seconds.
        connect_timeout_s: Time allowed to open the port or socket, seconds.
        reconnect_initial_s: First delay after a failed open, seconds.
        reconnect_max_s: Largest delay between open attempts, seconds.
        max_line_bytes: Longest accepted line; longer input is discarded as garbage.
        exclusive: Lock the port (``flock``) while open, so a second program (a
            ``hypoxia devices read`` beside the running service) gets ``port_busy`` instead of
            mixing its traffic into ours. Ignored for URLs.
        check_line_settings: After opening, read the port's settings back and refuse it
            (``line_setting_refused``) when the driver silently kept another value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1)
    baudrate: int = Field(9600, ge=1200, le=921600)
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    eol: Literal["\r", "\r\n", "\n"] = "\r\n"
    reply_timeout_s: float = Field(0.5, gt=0, le=10)
    connect_timeout_s: float = Field(2.0, gt=0, le=30)
    reconnect_initial_s: float = Field(0.5, ge=0, le=60)
    reconnect_max_s: float = Field(30.0, ge=0, le=600)
    max_line_bytes: int = Field(512, ge=16, le=65536)
    exclusive: bool = True
    check_line_settings: bool = True
