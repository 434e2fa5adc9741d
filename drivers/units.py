"""Canonical unit strings carried by :class:`drivers.reading.Reading`.

Field and method names carry the unit too (``o2_pct``, ``co2_pct``, ``temp_c``, ``flow_lpm``).
"""

from __future__ import annotations

PCT = "%"
"""Volume percent of a gas (O2 or CO2), 0-100."""
DEG_C = "degC"
"""Degrees Celsius."""
LPM = "L/min"
"""Litres per minute; for mass-flow controllers standard litres per minute (SLPM)."""
MBAR = "mbar"
"""Millibar (hPa), absolute or partial pressure as stated by the field name."""
PSIA = "psia"
"""Pounds per square inch, absolute (Alicat native pressure unit)."""
PCT_RH = "%RH"
"""Relative humidity, percent."""
PPM = "ppm"
"""Parts per million by volume."""

PPM_PER_PCT = 10_000.0
"""1 vol-% = 10 000 ppm."""
