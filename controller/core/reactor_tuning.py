"""The controller's tuning: per-loop overrides and the observer's, defaults from the process model.

Its own module (re-exported by ``controller.core.reactor``) so that ``reactor.py`` compiles with
mypyc (buildtools/compile_core.py): a pydantic model cannot be a compiled class.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from controller.core.loop_tuning import LoopTuning
from controller.core.observer_tuning import ObserverTuning


class ControllerTuning(BaseModel):
    """Per-loop tuning overrides; every field defaults to gains derived from the process model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 10 s filter, tau_c = 3 theta: N2 chatter from sensor noise 3-4x lower than (2 s, 2 theta)
    # with the same ramp ratio, undershoot and door recovery (measured on the twin, docs/control.md)
    o2: LoopTuning = Field(default_factory=lambda: LoopTuning(filter_s=10.0, tau_c_factor=3.0))
    co2: LoopTuning = Field(default_factory=lambda: LoopTuning(tau_c_factor=1.5))
    temp: LoopTuning = Field(default_factory=lambda: LoopTuning(tau_c_factor=3.0, filter_s=0.0))
    do: LoopTuning = Field(default_factory=lambda: LoopTuning(tau_c_factor=1.0, filter_s=10.0))
    # the headspace observer (None: the gas loops act on their filtered readings as before)
    observer: ObserverTuning | None = Field(default_factory=ObserverTuning)
