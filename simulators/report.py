"""Files a twin run leaves behind: time series (CSV), events (JSON lines), summary, PNG plot."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

from simulators.twin import SERIES_COLUMNS, TwinResult
from telemetry.messages import json_safe

PHASE_COLOURS = ("#f2f2f2", "#e3eef9", "#fdf0e0", "#e8f5e9", "#f3e5f5", "#fff8e1")


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as strict JSON (NaN and infinities become null)."""
    return json.dumps(json_safe(summary), indent=2, sort_keys=False)


def write_outputs(result: TwinResult, summary: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``timeseries.csv``, ``events.jsonl``, ``summary.json`` and ``run.png``.

    Returns:
        Their paths by kind; ``out_dir`` is created if needed.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "timeseries": out_dir / "timeseries.csv",
        "events": out_dir / "events.jsonl",
        "summary": out_dir / "summary.json",
        "plot": out_dir / "run.png",
    }
    with paths["timeseries"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SERIES_COLUMNS)
        for row in result.rows:
            writer.writerow(
                [
                    ""
                    if isinstance(v, float) and math.isnan(v)
                    else (round(v, 5) if isinstance(v, float) else v)
                    for v in row
                ]
            )
    with paths["events"].open("w") as fh:
        for ev in result.events:
            fh.write(json.dumps(json_safe({"t_s": ev.t_s, "kind": ev.kind, **ev.detail})) + "\n")
    paths["summary"].write_text(summary_json(summary) + "\n")
    plot_run(result, summary, paths["plot"])
    if plot_ramp(result, summary, out_dir / "ramp.png"):
        paths["ramp"] = out_dir / "ramp.png"
    return paths


def _column(result: TwinResult, name: str) -> list[float]:
    i = SERIES_COLUMNS.index(name)
    return [float(r[i]) if r[i] is not None else math.nan for r in result.rows]


def plot_run(result: TwinResult, summary: dict[str, Any], path: Path) -> None:
    """O2 / CO2 / temperature against set points and bands, gas flows, phases and harvests."""
    hours = [r[0] / 3600.0 for r in result.rows]
    dissolved = result.vessel.liquid is not None
    panels = 5 if dissolved else 4
    fig, axes = plt.subplots(
        panels, 1, figsize=(13, 2.6 * panels), sharex=True, constrained_layout=True
    )
    ax_o2 = axes[0]
    _phase_bands(result, axes)
    o2_sp = _column(result, "o2_sp_pct")
    band = {p.name: p.o2_band_pct for p in result.recipe.phases}
    phase_names = [r[1] for r in result.rows]
    lo = [s - band.get(n, 0.0) for s, n in zip(o2_sp, phase_names, strict=True)]
    hi = [s + band.get(n, 0.0) for s, n in zip(o2_sp, phase_names, strict=True)]
    ax_o2.fill_between(hours, lo, hi, color="tab:green", alpha=0.2, step="post", label="in-spec")
    ax_o2.step(hours, o2_sp, where="post", color="tab:green", lw=1, label="set point")
    ax_o2.plot(hours, _column(result, "o2_pct"), color="tab:blue", lw=0.8, label="O2 measured")
    ax_o2.plot(
        hours,
        _column(result, "o2_true_pct"),
        color="navy",
        lw=0.6,
        ls="--",
        label="O2 chamber (true)",
    )
    if result.vessel.culture is not None:
        ax_o2.plot(
            hours,
            _column(result, "pericellular_o2_pct"),
            color="tab:purple",
            lw=0.8,
            label="pericellular (est.)",
        )
    ax_o2.set_ylabel("O2 %")
    ax_o2.set_title(f"{result.recipe.name} - {result.vessel.name} (seed {result.seed})")
    _harvest_marks(result, axes)
    row = 1
    if dissolved:
        ax_do = axes[1]
        ax_do.step(
            hours,
            _column(result, "do_sp_pct"),
            where="post",
            color="tab:green",
            lw=1,
            label="DO set point",
        )
        ax_do.plot(hours, _column(result, "do_pct"), color="tab:cyan", lw=0.8, label="DO measured")
        ax_do.set_ylabel("DO %-equiv.")
        ax_do.legend(loc="upper right", fontsize=7)
        row = 2
    ax_co2, ax_t, ax_q = axes[row], axes[row + 1], axes[row + 2]
    ax_co2.step(hours, _column(result, "co2_sp_pct"), where="post", color="tab:green", lw=1)
    ax_co2.plot(hours, _column(result, "co2_pct"), color="tab:orange", lw=0.8, label="CO2")
    ax_co2.set_ylabel("CO2 %")
    ax_t.step(hours, _column(result, "temp_sp_c"), where="post", color="tab:green", lw=1)
    ax_t.plot(hours, _column(result, "temp_c"), color="tab:red", lw=0.8, label="temperature")
    ax_t.set_ylabel("degC")
    for name, colour in (
        ("n2_lpm", "tab:gray"),
        ("air_lpm", "tab:cyan"),
        ("o2_lpm", "tab:blue"),
        ("co2_lpm", "tab:orange"),
    ):
        ax_q.step(
            hours,
            _column(result, name),
            where="post",
            lw=0.8,
            color=colour,
            label=name.removesuffix("_lpm").upper(),
        )
    ax_q.set_ylabel("flow L/min")
    ax_q.set_xlabel("time, h")
    for ax in axes:
        ax.grid(alpha=0.3)
    ax_o2.legend(loc="upper right", fontsize=7, ncols=3)
    ax_q.legend(loc="upper right", fontsize=7, ncols=4)
    o2 = summary.get("o2") or {}
    if o2.get("ratio") is not None:
        ax_o2.text(
            0.01,
            0.05,
            f"time to +/-0.1 %: {o2['time_to_band_s'] / 60:.1f} min "
            f"(physical min {o2['bang_bang_min_s'] / 60:.1f}, ratio {o2['ratio']:.2f}); "
            f"undershoot {o2['undershoot_pct']:.3f} %; 2 sigma "
            f"{o2['steady_2sigma_pct'] or float('nan'):.3f} %",
            transform=ax_o2.transAxes,
            fontsize=8,
        )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_ramp(result: TwinResult, summary: dict[str, Any], path: Path) -> bool:
    """Zoom on the first hypoxic ramp at full resolution.

    Shows measured and chamber O2, the +/-0.1 % band, the physical minimum and the measured
    entry. Returns False when the run has no hypoxic ramp.
    """
    o2 = summary.get("o2") or {}
    t_bb, start = o2.get("bang_bang_min_s"), o2.get("ramp_start_s")
    if t_bb is None or start is None or not math.isfinite(t_bb):
        return False
    sp = float(o2["setpoint_pct"])
    tr = result.trace
    lo_s, hi_s = start - 60.0, start + 2.5 * t_bb + 300.0
    idx = [i for i, t in enumerate(tr.t_s) if lo_s <= t <= hi_s]
    minutes = [(tr.t_s[i] - start) / 60.0 for i in idx]
    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    ax.plot(minutes, [tr.o2_pct[i] for i in idx], lw=0.8, color="tab:blue", label="O2 measured")
    ax.plot(
        minutes,
        [tr.o2_true_pct[i] for i in idx],
        lw=0.8,
        ls="--",
        color="navy",
        label="O2 chamber (true)",
    )
    ax.axhspan(sp - 0.1, sp + 0.1, color="tab:green", alpha=0.2, label="+/-0.1 %")
    ax.axvline(t_bb / 60.0, color="black", lw=1, ls=":", label="physical minimum")
    if o2.get("time_to_band_s") is not None:
        ax.axvline(o2["time_to_band_s"] / 60.0, color="tab:red", lw=1, label="in band, stays")
    ax.set_ylim(max(0.0, sp - 1.0), sp + 3.0)
    ax.set_xlabel("minutes from the start of the ramp")
    ax.set_ylabel("O2 %")
    ax.set_title(f"First hypoxic ramp to {sp} % - {result.vessel.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _phase_bands(result: TwinResult, axes: Any) -> None:
    starts = [
        (ev.t_s / 3600.0, ev.detail["phase"]) for ev in result.events if ev.kind == "phase_start"
    ]
    end_h = result.duration_s / 3600.0
    for k, (t_h, name) in enumerate(starts):
        t_next = starts[k + 1][0] if k + 1 < len(starts) else end_h
        for ax in axes:
            ax.axvspan(t_h, t_next, color=PHASE_COLOURS[k % len(PHASE_COLOURS)], zorder=0)
        axes[0].annotate(
            name,
            (t_h, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
            xytext=(2, -2),
            textcoords="offset points",
        )
    for door in result.doors:
        for ax in axes:
            ax.axvline(door.at_s / 3600.0, color="tab:red", lw=0.8, ls=":")


def _harvest_marks(result: TwinResult, axes: Any) -> None:
    for h in result.engine.harvests:
        for ax in axes:
            ax.axvline(h.at_s / 3600.0, color="black", lw=1.0, ls="--")
        axes[0].annotate(
            h.name,
            (h.at_s / 3600.0, 0.85),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            ha="right",
        )
