"""Register codecs: 16-bit Modbus registers <-> int16/uint16/int32/uint32/float32.

Bytes inside a register are always big-endian (Modbus). Vendors differ in the order of the two
registers of a 32-bit value (docs/protocols.md §0):

* :attr:`WordOrder.BIG` -- most-significant word first ("ABCD"): Alicat, Bronkhorst.
* :attr:`WordOrder.LITTLE` -- least-significant word first ("CDAB"): Vaisala, Hamilton.

The packing itself is pymodbus's ``convert_from_registers`` / ``convert_to_registers`` (pymodbus
3.16, whose ``word_order`` expresses both orders above). What stays ours is a thin layer that
pymodbus does not provide: integer types round the value to nearest (pymodbus's ``struct.pack``
refuses floats), a value that does not fit raises :class:`ValueError` (pymodbus lets
``struct.error`` / ``OverflowError`` through), and :func:`decode` reads the *first* value of a
longer register slice (pymodbus converts every value and insists on an exact multiple).

Pure functions, shared by drivers and the wire-level simulators.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import StrEnum

from pymodbus.client import ModbusBaseClient


class RegisterType(StrEnum):
    """Numeric type stored in one or two holding/input registers."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"


class WordOrder(StrEnum):
    """Order of the two 16-bit words of a 32-bit value."""

    BIG = "big"
    LITTLE = "little"


_PYMODBUS = ModbusBaseClient
_DATATYPE = {
    RegisterType.INT16: _PYMODBUS.DATATYPE.INT16,
    RegisterType.UINT16: _PYMODBUS.DATATYPE.UINT16,
    RegisterType.INT32: _PYMODBUS.DATATYPE.INT32,
    RegisterType.UINT32: _PYMODBUS.DATATYPE.UINT32,
    RegisterType.FLOAT32: _PYMODBUS.DATATYPE.FLOAT32,
}

INT16_SENTINELS: dict[int, str] = {
    0x7FFF: "0x7FFF (over range / open)",
    0x8000: "0x8000 (not available)",
    0x8001: "0x8001 (under range)",
}
"""Raw register values that integer-valued instruments use for "no valid value"."""


def register_count(dtype: RegisterType) -> int:
    """Number of 16-bit registers used by ``dtype`` (1 or 2)."""
    count: int = _DATATYPE[dtype].value[1]
    return count


def decode(
    registers: Sequence[int], dtype: RegisterType, word_order: WordOrder = WordOrder.BIG
) -> int | float:
    """Decode the first value of ``dtype`` from ``registers``.

    Args:
        registers: Register values as read (each 0..65535).
        dtype: The stored type.
        word_order: Word order for 32-bit types; ignored for 16-bit types.

    Returns:
        An ``int`` for integer types, a ``float`` for float32 (may be NaN).

    Raises:
        ValueError: Too few registers.
    """
    n = register_count(dtype)
    if len(registers) < n:
        raise ValueError(f"{dtype} needs {n} registers, got {len(registers)}")
    value = _PYMODBUS.convert_from_registers(
        list(registers[:n]), _DATATYPE[dtype], word_order=word_order.value
    )
    if not isinstance(value, int | float):  # one value of a numeric type: never a list or str
        raise TypeError(f"pymodbus decoded {dtype} as {type(value).__name__}")
    return value


def encode(value: float, dtype: RegisterType, word_order: WordOrder = WordOrder.BIG) -> list[int]:
    """Encode ``value`` as registers of ``dtype`` (integers are rounded to nearest).

    Raises:
        ValueError: ``value`` does not fit ``dtype``.
    """
    packed_value: int | float = value if dtype is RegisterType.FLOAT32 else round(value)
    try:
        return _PYMODBUS.convert_to_registers(
            packed_value, _DATATYPE[dtype], word_order=word_order.value
        )
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {dtype}") from exc


def float32(value: float) -> float:
    """``value`` rounded to the nearest IEEE-754 single (what a float32 register can hold)."""
    return float(decode(encode(value, RegisterType.FLOAT32), RegisterType.FLOAT32))
