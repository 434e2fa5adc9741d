"""One reactor's control core: phase targets in, actuator commands out, once per cycle.

:class:`ReactorController` knows roles (O2 sensor, N2 mixer, heater), never vendors. The digital
twin calls it in lockstep; the service calls it from its cycle task with readings from drivers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mypy_extensions import mypyc_attr

from controller.core.gas import Co2Loop, GasFlows, O2Loop
from controller.core.loops import PURGING, BalanceLoop, LoopMode
from controller.core.observer import Flows, HeadspaceObserver
from controller.core.process import X_AIR_O2, ProcessModel
from controller.core.reactor_tuning import ControllerTuning
from controller.core.recipe import Phase, Ramp
from controller.core.recipe_engine import Measured
from controller.core.thermal import DissolvedO2Loop, TemperatureLoop

__all__ = ["MIXER_OF_FLOW", "Actuation", "ControllerTuning", "ReactorController"]


MIXER_OF_FLOW: dict[str, str] = {
    "n2_lpm": "n2_mixer",
    "air_lpm": "air_mixer",
    "o2_lpm": "o2_mixer",
    "co2_lpm": "co2_mixer",
}
"""Each gas-flow field of :class:`Actuation` and the mixer role that delivers it."""


@dataclass(frozen=True, slots=True)
class Actuation:
    """Commands for one cycle: gas flows in L/min, heater in W, harvest pump on/off."""

    n2_lpm: float
    air_lpm: float
    o2_lpm: float
    co2_lpm: float
    heater_w: float
    pump_on: bool = False

    @classmethod
    def from_flows(cls, flows: GasFlows, heater_w: float, pump_on: bool = False) -> Actuation:
        """The gas flows of ``flows`` with the given heater power (W) and pump state."""
        return cls(flows.n2_lpm, flows.air_lpm, flows.o2_lpm, flows.co2_lpm, heater_w, pump_on)

    @classmethod
    def safe(cls) -> Actuation:
        """Every output in its safe state: no gas, heater off, pump off."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, False)

    def mixer_flows_lpm(self) -> dict[str, float]:
        """Requested flow by mixer role (``n2_mixer`` …), L/min."""
        return {role: float(getattr(self, name)) for name, role in MIXER_OF_FLOW.items()}

    def as_dict(self) -> dict[str, float | bool]:
        """Every field by name (the telemetry's actuation block)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _rate_per_s(ramp: Ramp, scale: float) -> float | None:
    """Recipe ramp (per minute, in recipe units) to loop units per second; None = fastest."""
    return None if isinstance(ramp, str) else float(ramp) * scale / 60.0


@mypyc_attr(allow_interpreted_subclasses=True)  # bench/control_cases.py records by subclassing
class ReactorController:
    """O2 (or DO cascade), CO2 and temperature loops of one reactor.

    Args:
        model: Nominal process parameters of the vessel.
        tuning: Optional gain overrides.
    """

    def __init__(self, model: ProcessModel, tuning: ControllerTuning | None = None) -> None:
        tuning = tuning or ControllerTuning()
        self.model = model
        self.flows = GasFlows()
        self.o2 = O2Loop(model, self.flows, tuning.o2)
        self.co2 = Co2Loop(model, self.flows, tuning.co2)
        self.observer: HeadspaceObserver | None = None
        if tuning.observer is not None:
            self.observer = HeadspaceObserver(model, tuning.observer)
        self.temp = TemperatureLoop(model, tuning.temp)
        self.do: DissolvedO2Loop | None = None
        if model.liquid is not None:
            top = X_AIR_O2 if model.o2_max_lpm <= 0 else 0.6
            self.do = DissolvedO2Loop(model, tuning.do, headspace_max=top)
        self.dissolved = False

    def apply_phase(self, phase: Phase | None) -> None:
        """Take the targets of ``phase`` (``None``: everything off)."""
        if phase is None:
            for loop in (self.o2, self.co2, self.temp):
                loop.set_target(None, None)
            self.dissolved = False
            return
        o2 = phase.o2_frac
        self.dissolved = phase.o2_basis == "dissolved" and self.do is not None
        if self.do is not None and self.dissolved:
            self.do.set_target(o2, _rate_per_s(phase.o2_ramp_pct_per_min, 0.01))
        else:
            if self.do is not None:
                self.do.set_target(None, None)
            self.o2.set_target(o2, _rate_per_s(phase.o2_ramp_pct_per_min, 0.01))
        co2 = None if phase.co2_pct is None else phase.co2_pct / 100.0
        self.co2.set_target(co2, _rate_per_s(phase.co2_ramp_pct_per_min, 0.01))
        self.temp.set_target(phase.temp_c, _rate_per_s(phase.temp_ramp_c_per_min, 1.0))

    def step(
        self,
        dt_s: float,
        measured: Measured,
        pump_on: bool = False,
        door_open: bool | None = None,
        applied: Actuation | None = None,
    ) -> Actuation:
        """Run one control cycle on trusted values (``None`` = untrusted) and return commands.

        Args:
            dt_s: Control period, s.
            measured: Trusted readings of this cycle.
            pump_on: Harvest pump state to pass through.
            door_open: The door switch, where the site has one (``None``: the observer detects
                doors from the O2 rise).
            applied: What was actually applied over the last period when something other than
                this controller's last command was (an interlock); default: the last command.
        """
        estimates = self.observe(measured, door_open, applied)
        o2_frac = None if measured.o2_pct is None else measured.o2_pct / 100.0
        if self.dissolved and self.do is not None:
            do_frac = None if measured.do_pct is None else measured.do_pct / 100.0
            self.do.update(dt_s, do_frac)
            self.o2.follow(self.do.headspace_sp)
        self.o2.update(dt_s, o2_frac, estimates["o2"])
        co2_frac = None if measured.co2_pct is None else measured.co2_pct / 100.0
        self.co2.update(dt_s, co2_frac, estimates["co2"])
        self.temp.update(dt_s, measured.temp_c)
        return Actuation.from_flows(self.flows, self.temp.heater_w, pump_on)

    def observe(
        self,
        measured: Measured,
        door_open: bool | None = None,
        applied: Actuation | None = None,
        adapt: bool = True,
    ) -> dict[str, float | None]:
        """Advance the headspace observer one period and adapt the gas loops to its estimates.

        Args:
            measured: Trusted readings of this cycle.
            door_open: The door switch, where the site has one.
            applied: What was applied over the last period, if not the last command.
            adapt: Pass the adapted volume, leak and dead bands to the loops (an identification
                experiment keeps the loops' parameters fixed while it runs).

        Returns:
            The chamber O2 and CO2 fractions now (``None`` without an observer or before its
            first trusted reading) by loop name.
        """
        obs = self.observer
        if obs is None:
            return {"o2": None, "co2": None}
        f = applied if applied is not None else self.flows
        last = Flows(f.n2_lpm, f.air_lpm, f.o2_lpm, f.co2_lpm)
        obs.update(
            last,
            None if measured.o2_pct is None else measured.o2_pct / 100.0,
            None if measured.co2_pct is None else measured.co2_pct / 100.0,
            door_open,
            purging=self.o2.mode in PURGING,
        )
        if not obs.started:
            return {"o2": None, "co2": None}
        if adapt:
            self._adapt(obs)
        co2 = obs.co2_now if obs.co2_started else None
        return {"o2": obs.o2_now, "co2": co2}

    def _adapt(self, obs: HeadspaceObserver) -> None:
        """The gas loops take the observer's volume, leak and noise-tuned dead bands."""
        t = obs.tuning
        sigmas, band_max, band_min = t.dead_band_sigmas, t.dead_band_max_fs, t.dead_band_min_fs
        volume_l, leak_lpm = obs.volume_l, obs.leak_lpm
        for loop, sd in ((self.o2, obs.o2_sd), (self.co2, obs.co2_sd)):
            loop.volume_l = volume_l
            loop.leak_lpm = leak_lpm
            loop.dead_band_rate = sigmas * loop.pi.kp_per_s * sd
            loop.dead_band_error = sigmas * sd
            loop.dead_band_max_fs = band_max
            loop.dead_band_min_fs = band_min

    def adapted(self) -> dict[str, float]:
        """What the observer learned about the vessel (volume L, leak L/min, flow gain)."""
        if self.observer is None or not self.observer.started:
            return {}
        return self.observer.adapted()

    def loops(self) -> dict[str, BalanceLoop]:
        """The loops by name (``do`` only on vessels with a liquid model)."""
        named: dict[str, BalanceLoop] = {"o2": self.o2, "co2": self.co2, "temp": self.temp}
        if self.do is not None:
            named["do"] = self.do
        return named

    def snapshot(self) -> dict[str, Any]:
        """Controller state for the run journal."""
        f = self.flows
        return {
            "dissolved": self.dissolved,
            "flows": [f.n2_lpm, f.air_lpm, f.o2_lpm, f.co2_lpm],
            "loops": {name: loop.snapshot() for name, loop in self.loops().items()},
            "observer": None if self.observer is None else self.observer.snapshot(),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` (a snapshot without observer state restarts it)."""
        self.dissolved = bool(data["dissolved"])
        f = self.flows
        f.n2_lpm, f.air_lpm, f.o2_lpm, f.co2_lpm = (float(q) for q in data["flows"])
        for name, loop in self.loops().items():
            if name in data["loops"]:
                loop.restore(data["loops"][name])
        saved = data.get("observer")
        if self.observer is not None and saved is not None:
            self.observer.restore(saved)

    @property
    def o2_mode(self) -> LoopMode:
        """Mode of the O2 loop (purge, track, ...), for records and plots."""
        return self.o2.mode
