"""What ``hypoxia identify`` writes: the vessel file, the proposed gains, the plot, the record.

The vessel file has the schema of :mod:`simulators.vessel` (docs/physics.md §E): the gas volume,
leak, transport delay and sensor lags are the identified ones; supplies, MFC lag and the thermal
section come from the site's process model (the test does not identify them). The gains are those
of the relay autotune (:mod:`controller.engineering.autotune`) on a twin of that vessel, as
``hypoxia tune`` proposes them, and checked on the same twin (targets T1, T2, T4).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from common.config_errors import ConfigError
from controller.core.process import ProcessModel
from controller.core.reactor import ControllerTuning
from controller.core.recipe import Recipe, check_feasible
from controller.engineering.autotune import LOOP_NAMES, LoopName
from controller.engineering.identification import ChamberFit, IdentificationRecord
from controller.engineering.tuning_file import tuning_toml
from simulators.vessel import (
    GasSection,
    InitialSection,
    SensorSection,
    ThermalSection,
    Vessel,
)


def vessel_of(fit: ChamberFit, process: ProcessModel, name: str) -> Vessel:
    """A vessel with the identified gas parameters and the site model's other numbers."""
    noise = round(max(fit.o2_rms_pct, 0.001), 4)
    co2_t63 = fit.co2_t63_s.value if fit.co2_t63_s is not None else process.co2_sensor_t63_s
    co2_noise = round(max(fit.co2_rms_pct or noise, 0.001), 4)
    return Vessel(
        name=name,
        description="identified by hypoxia identify (docs/commissioning.md)",
        control_period_s=process.control_period_s,
        gas=GasSection(
            volume_l=round(fit.volume_l.value, 3),
            leak_lpm=round(max(fit.leak_lpm.value, 0.0), 5),
            n2_max_lpm=process.n2_max_lpm,
            air_max_lpm=process.air_max_lpm,
            o2_max_lpm=process.o2_max_lpm,
            co2_max_lpm=process.co2_max_lpm,
            min_through_flow_lpm=process.min_through_flow_lpm,
            mfc_tau_s=process.mfc_tau_s,
            transport_delay_s=round(fit.transport_delay_s.value, 2),
        ),
        o2_sensor=SensorSection(t63_s=round(fit.o2_t63_s.value, 2), noise_sd=noise),
        co2_sensor=SensorSection(t63_s=round(co2_t63, 2), noise_sd=co2_noise),
        temp_sensor=SensorSection(t63_s=process.temp_sensor_t63_s, noise_sd=0.01),
        thermal=ThermalSection(
            heat_capacity_j_per_k=process.heat_capacity_j_per_k,
            ua_w_per_k=process.ua_w_per_k,
            heater_max_w=process.heater_max_w,
            room_temp_c=process.room_temp_c,
        ),
        initial=InitialSection(temp_c=37.0),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | int):
        return repr(float(value))
    return json.dumps(str(value), ensure_ascii=False)


def vessel_toml(vessel: Vessel, fit: ChamberFit, where: str, stamp: str) -> str:
    """``vessel`` as a vessel file, with the fit's uncertainties as comments."""
    lines = [
        f"# identified by hypoxia identify on {where} at {stamp}",
        f"# (1 sigma)  volume_l {fit.volume_l}, leak_lpm {fit.leak_lpm}, "
        f"transport_delay_s {fit.transport_delay_s}, o2 t63_s {fit.o2_t63_s}",
    ]
    if fit.co2_t63_s is not None:
        lines.append(f"# (1 sigma)  co2 t63_s {fit.co2_t63_s}")
    lines.append("# supplies, MFC lag and thermal numbers: the site's process model (not tested)")
    sections: list[tuple[str, BaseModel]] = []
    for key, value in vessel:
        if isinstance(value, BaseModel):
            sections.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, section in sections:
        lines.extend(["", f"[{key}]"])
        for field, value in section.model_dump(exclude_none=True).items():
            if not isinstance(value, dict):
                lines.append(f"{field} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def record_csv(record: IdentificationRecord) -> str:
    """The test's readings and set points as CSV (one row per reading or set-point change)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["t_s", "kind", "o2_pct", "co2_pct", "n2_lpm", "air_lpm", "o2_lpm", "co2_lpm"])
    rows: list[tuple[float, list[Any]]] = []
    rows += [
        (t, ["o2", y, "", "", "", "", ""])
        for t, y in zip(record.o2_t_s, record.o2_pct, strict=False)
    ]
    rows += [
        (t, ["co2", "", y, "", "", "", ""])
        for t, y in zip(record.co2_t_s, record.co2_pct, strict=False)
    ]
    rows += [(f.t_s, ["setpoint", "", "", *f.flows()]) for f in record.flows]
    t0 = min(t for t, _ in rows)
    for t, rest in sorted(rows, key=lambda row: row[0]):
        writer.writerow([f"{t - t0:.3f}", *rest])
    return buffer.getvalue()


def plot_fit(record: IdentificationRecord, fit: ChamberFit, path: Path, title: str) -> None:
    """PNG of the readings against the fitted model (O2 and, if recorded, CO2) with the flows."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    t0 = record.flows[0].t_s
    panels = 3 if record.co2_t_s else 2
    fig, axes = plt.subplots(panels, 1, figsize=(9, 2.6 * panels + 1), sharex=True)
    o2_t = [(t - t0) / 60 for t in record.o2_t_s]
    ax = axes[0]
    ax.plot(o2_t, record.o2_pct, ".", ms=2, color="0.55", label="O2 reading")
    ax.plot(o2_t[: fit.o2_used], fit.o2_model_pct, color="C0", lw=1.4, label="fit")
    ax.set_ylabel("O2 %")
    ax.set_title(
        f"{title}\nV {fit.volume_l} L, leak {fit.leak_lpm} L/min, "
        f"delay {fit.transport_delay_s} s, t63 {fit.o2_t63_s} s",
        fontsize=9,
    )
    ax.legend(loc="best", fontsize=8)
    if record.co2_t_s:
        cx = axes[1]
        co2_t = [(t - t0) / 60 for t in record.co2_t_s]
        cx.plot(co2_t, record.co2_pct, ".", ms=2, color="0.55", label="CO2 reading")
        if fit.co2_model_pct:
            cx.plot(
                co2_t, fit.co2_model_pct, color="C2", lw=1.4, label=f"fit, t63 {fit.co2_t63_s} s"
            )
        cx.set_ylabel("CO2 %")
        cx.legend(loc="best", fontsize=8)
    fx = axes[-1]
    times = [(f.t_s - t0) / 60 for f in record.flows] + [o2_t[-1]]
    for gas, color in (("n2_lpm", "C1"), ("co2_lpm", "C2"), ("air_lpm", "C3")):
        values = [getattr(f, gas) for f in record.flows]
        if any(values):
            fx.step(times, [*values, values[-1]], where="post", color=color, label=gas)
    fx.set_ylabel("set point L/min")
    fx.set_xlabel("min")
    fx.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Tuned:
    """The proposed gains, the twin check's summary line, or why there are none."""

    proposed: ControllerTuning | None
    summary: str = ""
    error: str = ""
    check: dict[str, Any] | None = None

    def text(self, header: str) -> str:
        """The ``[tuning]`` file."""
        assert self.proposed is not None  # noqa: S101 - only called without error
        return tuning_toml(self.proposed, header)


def tune_identified(vessel: Vessel, o2_pct: float, loops: list[str]) -> Tuned:
    """Relay-autotune ``loops`` on a twin of ``vessel`` at ``o2_pct`` and check the gains there."""
    from simulators.tuning_twin import autotune_on_twin, operating_phase, verify_on_twin

    bad = [n for n in loops if n not in LOOP_NAMES]
    if bad or not loops:
        allowed = ", ".join(LOOP_NAMES)
        return Tuned(None, error=f"--loops: {','.join(loops)}; allowed: a comma list of {allowed}")
    names: list[LoopName] = [n for n in LOOP_NAMES if n in loops]
    phase = operating_phase(o2_pct, 5.0, 37.0)
    try:
        check_feasible(
            Recipe(name="tune", phases=[phase]), vessel.process_model(), "--tune-o2", vessel.name
        )
    except ConfigError as exc:
        return Tuned(None, error=str(exc))
    session = autotune_on_twin(vessel, phase, loops=names)
    failed = [f"{r.loop}: {r.reason}" for r in session.results.values() if not r.ok]
    if failed:
        return Tuned(None, error="relay autotune failed: " + "; ".join(failed))
    check = verify_on_twin(vessel, session.proposed, o2_pct)
    o2 = session.proposed.o2
    summary = (
        f"proposed O2 gains kp {o2.kp_per_s or 0:.4g} /s, Ti {o2.ti_s or 0:.4g} s; "
        "on the identified twin: "
        f"O2 ratio {check['ratio']:.3g} (limit {check['ratio_limit']:.3g}), undershoot "
        f"{check['undershoot_pct']:.3g} % (<= 0.1), steady 2 sigma "
        f"{check['steady_2sigma_pct']:.3g} % (<= 0.1)"
    )
    return Tuned(session.proposed, summary, check=check)
