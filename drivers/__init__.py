"""Async device drivers: wire formats of real O2, CO2 and temperature sensors and gas mixers.

Drivers know wire formats, never control. Every measurement is a :class:`drivers.reading.Reading`.
Transports live in :mod:`drivers.transport`; capability protocols in :mod:`drivers.base`.
"""

from drivers.reading import Quality, Reading

__all__ = ["Quality", "Reading"]
