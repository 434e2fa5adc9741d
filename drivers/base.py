"""Capability protocols: what the controller may ask of an instrument, independent of vendor.

Every concrete driver satisfies one or more of these structurally (no inheritance needed), so the
controller and in-process fakes depend only on this module. All measurement methods return a
:class:`drivers.reading.Reading` and never raise for device faults; actuator methods verify their
effect by reading back and raise :class:`drivers.errors.WriteVerifyError` on mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class GasReport:
    """What a flow controller says it is calibrated for.

    Attributes:
        gas: Short name of the selected gas (``"N2"``), ``None`` when the reply had none.
        full_scale_lpm: Full-scale mass flow it reports, standard L/min; ``None`` where the
            instrument cannot tell (or did not answer the query).
    """

    gas: str | None
    full_scale_lpm: float | None


@dataclass(frozen=True, slots=True)
class GasCheck:
    """The outcome of :meth:`GasSelectable.ensure_gas`: what the instrument reported.

    Attributes:
        device: Device name.
        where: Its bus or line and address (``"line mfc-rs232, unit B"``).
        requested: The gas the site file states (``"CO2"``).
        found: The gas it reported before any change (``None`` if unreadable).
        reported: The gas it reports after selecting (``None`` if unreadable).
        selected: True when a select command was sent.
        full_scale_lpm: Full scale the instrument reports, standard L/min (``None`` if unknown).
        configured_full_scale_lpm: Full scale from the site file, standard L/min.
        reason: ``""`` when the instrument runs on the requested gas (and, where it tells, the
            configured full scale); else ``"<keyword>: <message>"`` with keyword
            ``gas_mismatch``, ``gas_select_refused``, ``full_scale_mismatch`` or a transport one.
    """

    device: str
    where: str
    requested: str
    found: str | None
    reported: str | None
    selected: bool
    full_scale_lpm: float | None
    configured_full_scale_lpm: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the flow controller runs on the requested gas."""
        return not self.reason

    def describe(self) -> str:
        """One line for logs and ``hypoxia devices read``."""
        scale = (
            f"full scale {self.full_scale_lpm:g} L/min"
            if self.full_scale_lpm is not None
            else f"full scale not reported (configured {self.configured_full_scale_lpm:g} L/min)"
        )
        if not self.ok:
            return f"{self.device} ({self.where}): {self.reason}"
        change = f" (selected, was {self.found})" if self.selected else ""
        return f"{self.device} ({self.where}): {self.reported}{change}, {scale}"


@runtime_checkable
class GasSelectable(Protocol):
    """A flow controller whose gas calibration can be read back and, where allowed, selected."""

    async def read_gas(self) -> GasReport:
        """The selected gas and full scale as the instrument reports them.

        Raises:
            DriverError: The instrument did not answer.
        """
        ...

    async def ensure_gas(self, gas: str, *, select: bool = True) -> GasCheck:
        """Make sure the instrument runs on ``gas``.

        Reads the gas, selects ``gas`` if different (and ``select`` allows), verifies by
        read-back. Never raises for device faults (the check carries the reason).
        """
        ...
