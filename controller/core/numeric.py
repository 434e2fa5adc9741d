"""Small numeric helpers of the control core, called every cycle (no pydantic: compiled too).

``scripts/build-compiled`` compiles this module with the loops and the observer, so a compiled
caller calls it natively; in pure Python it is an ordinary function.
"""

from __future__ import annotations


def clip(value: float, low: float, high: float) -> float:
    """``min(max(value, low), high)``, the same result without two builtin calls.

    The control core clips every cycle; this is its one clip (a NaN passes through, as there).
    """
    if value < low:  # noqa: PLR1730 - a builtin call is what this saves
        value = low
    if value > high:
        return high
    return value
