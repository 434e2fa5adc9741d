"""Alicat mass-flow controllers: ASCII serial (:class:`AlicatSerial`) and Modbus."""

from drivers.alicat.common import (
    DEFAULT_BAD_STATUS,
    GAS_NUMBERS,
    AlicatSample,
    FlowUnit,
    gas_number,
)
from drivers.alicat.modbus import AlicatModbus
from drivers.alicat.serial_ascii import AlicatSerial, parse_frame

__all__ = [
    "DEFAULT_BAD_STATUS",
    "GAS_NUMBERS",
    "AlicatModbus",
    "AlicatSample",
    "AlicatSerial",
    "FlowUnit",
    "gas_number",
    "parse_frame",
]
