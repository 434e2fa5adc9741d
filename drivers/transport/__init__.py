"""Shared transports: one pymodbus client per Modbus bus, one reader per ASCII serial line."""

from drivers.transport.library_logs import library_debug, quiet_library_logs
from drivers.transport.modbus import HubStats, ModbusHub
from drivers.transport.serial_line import Line, SerialLine
from drivers.transport.settings import (
    ModbusBusSettings,
    ModbusRtuSettings,
    ModbusTcpSettings,
    SerialLineSettings,
)
from drivers.transport.startup import Failure, OpenTracker, TransportState

__all__ = [
    "Failure",
    "HubStats",
    "Line",
    "ModbusBusSettings",
    "ModbusHub",
    "ModbusRtuSettings",
    "ModbusTcpSettings",
    "OpenTracker",
    "SerialLine",
    "SerialLineSettings",
    "TransportState",
    "library_debug",
    "quiet_library_logs",
]
