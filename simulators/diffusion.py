"""Medium-layer diffusion-reaction solver (docs/physics.md §B7): kept under its old name.

The solver lives in :mod:`controller.core.medium_layer`, so the service runs the same estimator
on measured headspace O2 without importing simulators.
"""

from __future__ import annotations

from controller.core.medium_layer import (
    MediumLayer,
    slowest_time_constant_s,
    steady_cell_um,
    step_response_cell,
)

__all__ = ["MediumLayer", "slowest_time_constant_s", "steady_cell_um", "step_response_cell"]
