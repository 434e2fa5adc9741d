"""Register codecs: 16-bit Modbus registers <-> int16/uint16/int32/uint32/float32.

Bytes inside a register are always big-endian (Modbus). Vendors differ in the order of the two
registers of a 32-bit value (device-protocols.md §0):

* :attr:`WordOrder.BIG` -- most-significant word first ("ABCD"): Alicat, Bronkhorst.
* :attr:`WordOrder.LITTLE` -- least-significant word first ("CDAB"): Vaisala, Hamilton.

Pure functions, shared by drivers and the wire-level simulators.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import StrEnum


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


_STRUCT = {
    RegisterType.INT16: ">h",
    RegisterType.UINT16: ">H",
    RegisterType.INT32: ">i",
    RegisterType.UINT32: ">I",
    RegisterType.FLOAT32: ">f",
}

INT16_SENTINELS: dict[int, str] = {
    0x7FFF: "0x7FFF (over range / open)",
    0x8000: "0x8000 (not available)",
    0x8001: "0x8001 (under range)",
}
"""Raw register values that integer-valued instruments use for "no valid value"."""


def register_count(dtype: RegisterType) -> int:
    """Number of 16-bit registers used by ``dtype`` (1 or 2)."""
    return 1 if dtype in (RegisterType.INT16, RegisterType.UINT16) else 2


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
    words = list(registers[:n])
    if n == 2 and word_order is WordOrder.LITTLE:
        words.reverse()
    raw = struct.pack(f">{n}H", *words)
    value: int | float = struct.unpack(_STRUCT[dtype], raw)[0]
    return value


def encode(value: float, dtype: RegisterType, word_order: WordOrder = WordOrder.BIG) -> list[int]:
    """Encode ``value`` as registers of ``dtype`` (integers are rounded to nearest).

    Raises:
        ValueError: ``value`` does not fit ``dtype``.
    """
    packed_value: int | float = value if dtype is RegisterType.FLOAT32 else round(value)
    try:
        raw = struct.pack(_STRUCT[dtype], packed_value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit {dtype}") from exc
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    if len(words) == 2 and word_order is WordOrder.LITTLE:
        words.reverse()
    return words


def float32(value: float) -> float:
    """``value`` rounded to the nearest IEEE-754 single (what a float32 register can hold)."""
    result: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return result
