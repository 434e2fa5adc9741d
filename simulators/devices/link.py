"""The seam between device simulators and whatever supplies the physics.

Wire-level simulators (:mod:`simulators.devices`) read measured quantities from a
:class:`PlantLink` and push actuator commands into it. Tests use :class:`StaticPlantLink`;
the plant model provides its own adapter. Keep implementations cheap and non-blocking: they are
called from inside request handlers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@runtime_checkable
class PlantLink(Protocol):
    """What a simulated instrument can see of, and do to, the plant.

    Gas lines are identified by the gas they carry (``"N2"``, ``"CO2"``, ``"O2"``, ``"Air"``):
    the key is the plant inlet the mass-flow controller feeds, not the gas calibration selected
    on the device.
    """

    def o2_pct(self) -> float:
        """Headspace O2 at the sensor, vol-% (0-100)."""
        ...

    def co2_pct(self) -> float:
        """Headspace CO2 at the sensor, vol-% (0-100)."""
        ...

    def temp_c(self) -> float:
        """Culture/vessel temperature at the probe, degC."""
        ...

    def flow_lpm(self, gas: str) -> float:
        """Actual mass flow of gas line ``gas``, standard L/min (>= 0)."""
        ...

    def set_flow_setpoint_lpm(self, gas: str, lpm: float) -> None:
        """The MFC on line ``gas`` now controls to ``lpm`` standard L/min (0 = valve closed)."""
        ...

    def set_relay(self, index: int, on: bool) -> None:
        """Relay ``index`` (0-based, as wired on the relay board) is now energised or not."""
        ...


@runtime_checkable
class SiteLink(PlantLink, Protocol):
    """A :class:`PlantLink` that a simulated site wires its actuators into.

    Simulator factories (``for_config``) call these while the site is being built, before any
    client connects.
    """

    def wire_relay(self, index: int, role: str) -> None:
        """Relay ``index`` drives the actuator of ``role`` (``"heater"``, ``"harvest_pump"``)."""
        ...

    def wire_heater(self, power_w: Callable[[], float]) -> None:
        """The heater's power, W, is whatever ``power_w`` returns when the plant advances."""
        ...


@dataclass
class StaticPlantLink:
    """A plant with fixed, directly settable values; MFC flow equals its setpoint instantly.

    Attributes:
        o2_now_pct: Value returned by :meth:`o2_pct`, vol-%.
        co2_now_pct: Value returned by :meth:`co2_pct`, vol-%.
        temp_now_c: Value returned by :meth:`temp_c`, degC.
        setpoints_lpm: Last setpoint per gas line, standard L/min.
        relays: Last state per relay index.
        flow_offsets_lpm: Added to the setpoint to give the actual flow (e.g. a leaky valve).
    """

    o2_now_pct: float = 20.9
    co2_now_pct: float = 0.04
    temp_now_c: float = 37.0
    setpoints_lpm: dict[str, float] = field(default_factory=dict)
    relays: dict[int, bool] = field(default_factory=dict)
    flow_offsets_lpm: dict[str, float] = field(default_factory=dict)

    def o2_pct(self) -> float:
        """Headspace O2, vol-%."""
        return self.o2_now_pct

    def co2_pct(self) -> float:
        """Headspace CO2, vol-%."""
        return self.co2_now_pct

    def temp_c(self) -> float:
        """Vessel temperature, degC."""
        return self.temp_now_c

    def flow_lpm(self, gas: str) -> float:
        """Flow of line ``gas`` = its setpoint (+ offset), standard L/min."""
        return max(0.0, self.setpoints_lpm.get(gas, 0.0) + self.flow_offsets_lpm.get(gas, 0.0))

    def set_flow_setpoint_lpm(self, gas: str, lpm: float) -> None:
        """Record the setpoint of line ``gas``."""
        self.setpoints_lpm[gas] = lpm

    def set_relay(self, index: int, on: bool) -> None:
        """Record the relay state."""
        self.relays[index] = on
