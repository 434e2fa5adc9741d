"""The gas-cylinder forecast of a running reactor (controller/engineering/gas_forecast.py).

Gas used so far is integrated from the commanded flows of every cycle (the runner keeps it in its
checkpoint, so a restart continues the count; the page keeps its own from what it has seen); the
rest of the recipe is planned from the vessel model. With cylinders in the site file
(``[[page.cylinders]]``) the forecast says when each runs out — the runner raises the
``gas_cylinder`` alarm when one runs out before the run ends — and without, how many litres the
rest of the run needs. The forecast is in ``hypoxia ctl status``, the retained state message
and the operator page.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.core.recipe import PhaseEnd
from controller.engineering.gas_forecast import (
    GASES,
    Cylinder,
    RunPosition,
    cylinder_alarms,
    forecast_cylinders,
)
from controller.service.page_config import CylinderConfig

if TYPE_CHECKING:
    from controller.service.runner import ReactorRunner

UNLIMITED_L = 1e12
"""Content of a supply with no cylinder configured: only the litres needed are of interest."""


def position(runner: ReactorRunner) -> RunPosition | None:
    """Where the run stands now, for the forecast (``None`` when no phase runs)."""
    engine = runner.engine
    if engine is None or engine.phase is None:
        return None
    phase = engine.phase
    t = runner.snapshot.run_t_s
    exposure = engine.clock.exposure_s if engine.clock else 0.0
    progress = exposure if phase.until is PhaseEnd.EXPOSURE else max(0.0, t - engine.phase_start_s)
    readings = runner.snapshot.readings

    def value(role: str) -> float | None:
        v = readings.get(role, {}).get("value")
        return None if v is None else float(v)

    o2, co2, temp = value("o2"), value("co2"), value("temperature")
    return RunPosition(
        phase_index=engine.index,
        progress_s=progress,
        now_s=t,
        o2_frac=(o2 if o2 is not None else 20.9) / 100.0,
        co2_frac=(co2 if co2 is not None else 0.04) / 100.0,
        temp_c=temp,
    )


def gas_forecast(
    runner: ReactorRunner, used_l: dict[str, float], cylinders: list[CylinderConfig]
) -> list[dict[str, Any]]:
    """Per gas the vessel can use: litres used, needed to finish, and when a cylinder runs out."""
    at = position(runner)
    if at is None or runner.recipe is None or runner.run is None:
        return []
    model = runner.config.process
    supplies: dict[str, CylinderConfig] = {
        c.gas: c for c in cylinders if c.reactor == runner.config.id
    }
    maxima = {
        "n2": model.n2_max_lpm,
        "air": model.air_max_lpm,
        "o2": model.o2_max_lpm,
        "co2": model.co2_max_lpm,
    }
    gases = [g for g in GASES if maxima[g] > 0]
    tanks = []
    for gas in gases:
        cfg = supplies.get(gas)
        if cfg is None:
            tanks.append(Cylinder(gas, UNLIMITED_L, UNLIMITED_L))
            continue
        start = cfg.content_l if cfg.content_l is not None else cfg.capacity_l
        tanks.append(Cylinder(gas, cfg.capacity_l, max(0.0, start - used_l.get(gas, 0.0))))
    forecasts = forecast_cylinders(model, runner.recipe, tanks, at, used_l)
    alarms = {a.gas: a for a in cylinder_alarms(forecasts)}
    started: datetime = runner.run.started_utc
    out = []
    for f in forecasts:
        configured = f.gas in supplies
        empty = f.empty_at_s if configured else None
        out.append(
            {
                "gas": f.gas,
                "used_l": used_l.get(f.gas, 0.0),
                "needed_l": f.needed_l if math.isfinite(f.needed_l) else None,
                "content_l": f.content_l if configured else None,
                "empty_utc": (started + timedelta(seconds=empty)).isoformat() if empty else None,
                "run_end_utc": (started + timedelta(seconds=f.run_end_s)).isoformat(),
                "severity": alarms[f.gas].severity if configured and f.gas in alarms else None,
                "message": alarms[f.gas].message if configured and f.gas in alarms else "",
            }
        )
    return out
