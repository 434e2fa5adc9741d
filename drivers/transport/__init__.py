"""Shared transports: one pymodbus client per Modbus bus, one reader per ASCII serial line."""

from drivers.transport.modbus import HubStats, ModbusHub
from drivers.transport.serial_line import Line, SerialLine
from drivers.transport.settings import (
    ModbusBusSettings,
    ModbusRtuSettings,
    ModbusTcpSettings,
    SerialLineSettings,
)

__all__ = [
    "HubStats",
    "Line",
    "ModbusBusSettings",
    "ModbusHub",
    "ModbusRtuSettings",
    "ModbusTcpSettings",
    "SerialLine",
    "SerialLineSettings",
]
