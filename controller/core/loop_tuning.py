"""Tuning of one control loop (:mod:`controller.core.loops`).

A module of its own so that the loops' module holds no pydantic model: the loops are what
``scripts/build-compiled`` compiles with mypyc (a pydantic model cannot be a compiled class).
:mod:`controller.core.loops` re-exports :class:`LoopTuning`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LoopTuning(BaseModel):
    """Tuning of one balance loop (all optional; defaults are derived from the process model).

    Attributes:
        kp_per_s: Proportional gain of the linearised loop, 1/s (rate asked per unit of error).
        ti_s: Integral time, s.
        tau_c_factor: SIMC closed-loop time constant as a multiple of the loop's dead time (0.5-20).
        filter_s: First-order filter on the measurement, s (0 = none).
        replan: Error, in the loop's units, above which tracking re-plans a time-optimal move.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kp_per_s: float | None = Field(default=None, gt=0)
    ti_s: float | None = Field(default=None, gt=0)
    tau_c_factor: float = Field(default=2.0, ge=0.5, le=20)
    filter_s: float = Field(default=2.0, ge=0, le=600)
    replan: float | None = Field(default=None, gt=0)
