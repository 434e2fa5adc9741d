"""Resume after a restart: what a run does when the service comes back (the reactor's policy).

``resume`` continues the phase as it was; ``hold`` holds the phase (exposure and outputs as the
held phase defines) until an operator restarts it; ``safe`` additionally keeps every output in its
safe state until then. The outage itself is recorded by the runner in the journal.
"""

from __future__ import annotations

from typing import Literal

from controller.core.recipe_engine import Event, PhaseState, RecipeEngine

RestartPolicy = Literal["resume", "hold", "safe"]


def resumed_event(
    t_s: float,
    run_id: str,
    policy: RestartPolicy,
    outage_s: float,
    checkpoint_t_s: float,
    engine: RecipeEngine,
) -> Event:
    """The ``run_resumed`` event: which run, under which policy, after how long an outage."""
    return Event(
        t_s,
        "run_resumed",
        {
            "run_id": run_id,
            "policy": policy,
            "outage_s": outage_s,
            "last_checkpoint_t_s": checkpoint_t_s,
            "phase": engine.phase.name if engine.phase else None,
            "exposure_s": engine.clock.exposure_s if engine.clock else 0.0,
        },
    )


def apply_policy(
    policy: RestartPolicy, engine: RecipeEngine, t_s: float
) -> tuple[list[Event], bool]:
    """Apply ``policy`` to a restored engine; return its events and whether outputs stay safe."""
    events: list[Event] = []
    if policy in ("hold", "safe") and engine.state is PhaseState.RUNNING:
        events += engine.hold(t_s)
    return events, policy == "safe"
