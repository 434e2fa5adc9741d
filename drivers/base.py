"""Capability protocols: what the controller may ask of an instrument, independent of vendor.

Every concrete driver satisfies one or more of these structurally (no inheritance needed), so the
controller and in-process fakes depend only on this module. All measurement methods return a
:class:`drivers.reading.Reading` and never raise for device faults; actuator methods verify their
effect by reading back and raise :class:`drivers.errors.WriteVerifyError` on mismatch.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from drivers.reading import Reading


@runtime_checkable
class Device(Protocol):
    """Anything with a name, a start-up step and a read of everything it reports."""

    name: str

    async def start(self) -> None:
        """Prepare the instrument (set output mode, read constants). Idempotent."""
        ...

    async def read_all(self) -> dict[str, Reading]:
        """Everything the device reports, by quantity name (``hypoxia devices read``).

        Names carry their unit (``"o2_pct"``, ``"temp_c"``); faults give BAD readings.
        """
        ...


@runtime_checkable
class O2Sensor(Device, Protocol):
    """Gas-phase oxygen sensor."""

    async def read_o2_pct(self) -> Reading:
        """O2 in vol-% (0-100), unit ``"%"``."""
        ...


@runtime_checkable
class CO2Sensor(Device, Protocol):
    """Gas-phase carbon-dioxide sensor."""

    async def read_co2_pct(self) -> Reading:
        """CO2 in vol-% (0-100), unit ``"%"``."""
        ...


@runtime_checkable
class O2Compensated(Protocol):
    """A sensor whose reading is corrected with the measured O2 (e.g. an NDIR CO2 probe)."""

    async def write_o2_compensation(self, o2_pct: float) -> None:
        """Give the sensor the chamber O2, vol-% (0-100), verified by read-back."""
        ...


@runtime_checkable
class TemperatureSensor(Device, Protocol):
    """Temperature sensor."""

    async def read_temp_c(self) -> Reading:
        """Temperature in degrees Celsius, unit ``"degC"``."""
        ...


@runtime_checkable
class FlowController(Device, Protocol):
    """Mass-flow controller for one gas line."""

    async def read_flow_lpm(self) -> Reading:
        """Measured mass flow in standard L/min, unit ``"L/min"``."""
        ...

    async def set_flow_lpm(self, lpm: float) -> None:
        """Set the mass-flow setpoint (standard L/min, 0..full scale), verified by read-back."""
        ...

    async def hold_closed(self) -> None:
        """Close the valve regardless of setpoint (safe state), verified."""
        ...

    async def cancel_hold(self) -> None:
        """Resume closed-loop control of the setpoint, verified."""
        ...


@runtime_checkable
class SwitchedOutput(Protocol):
    """One on/off output (solenoid valve, pump) whose state can be read back."""

    name: str

    async def set(self, on: bool) -> None:
        """Switch on or off, verified by read-back."""
        ...

    async def read(self) -> bool:
        """Current state as reported by the device."""
        ...
