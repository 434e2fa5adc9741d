"""The record's plots (matplotlib, Agg), as self-contained SVG data URIs for inline ``<img>``.

Long runs are drawn from a min/max envelope per horizontal bucket, so a 48 h run at one point a
second stays a few hundred kilobytes and no excursion disappears between two plotted points.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from records.analysis import Excursion
from records.model import BatchRecord, HarvestRow

BUCKETS = 1600
"""Horizontal resolution of the envelope (about two per printed pixel column at 150 dpi)."""
WIDTH_IN = 10.0
Array = NDArray[np.float64]


def _array(values: Sequence[float | None]) -> Array:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def envelope(t: Array, y: Array, buckets: int = BUCKETS) -> tuple[Array, Array]:
    """Min and max of ``y`` per time bucket, interleaved in time order (NaN gaps kept)."""
    if len(t) <= 2 * buckets:
        return t, y
    edges = np.linspace(t[0], t[-1], buckets + 1)
    index = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, buckets - 1)
    out_t: list[float] = []
    out_y: list[float] = []
    starts = np.searchsorted(index, np.arange(buckets))
    ends = np.append(starts[1:], len(t))
    for a, b in zip(starts, ends, strict=True):
        if a == b:
            continue
        seg = y[a:b]
        if np.all(np.isnan(seg)):
            out_t += [t[a]]
            out_y += [math.nan]
            continue
        lo, hi = int(np.nanargmin(seg)), int(np.nanargmax(seg))
        for k in sorted({lo, hi}):
            out_t.append(t[a + k])
            out_y.append(seg[k])
    return np.array(out_t), np.array(out_y)


def _scale(rec: BatchRecord) -> tuple[float, str]:
    """Seconds per x unit and its label (minutes for runs under 3 h)."""
    return (60.0, "run time, min") if rec.last_s < 3 * 3600 else (3600.0, "run time, h")


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "hypoxia-record"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _shade(ax: Any, rec: BatchRecord, scale: float, excursions: Sequence[Excursion]) -> None:
    for o in rec.outages:
        ax.axvspan(o.start_s / scale, o.end_s / scale, color="0.6", alpha=0.35, lw=0)
    for e in excursions:
        ax.axvspan(e.start_s / scale, e.end_s / scale, color="tab:red", alpha=0.18, lw=0)


def _harvest_lines(axes: Sequence[Any], rec: BatchRecord, scale: float) -> None:
    for h in rec.harvests:
        if h.at_s is None:
            continue
        for ax in axes:
            ax.axvline(h.at_s / scale, color="black", lw=0.9, ls="--")
        axes[0].annotate(
            h.name,
            (h.at_s / scale, 0.97),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            ha="right",
            va="top",
        )


def _line(ax: Any, t: Array, y: Array, scale: float, **kw: object) -> None:
    if np.all(np.isnan(y)):
        return
    et, ey = envelope(t, y)
    ax.plot(et / scale, ey, lw=0.8, **kw)


def _step(ax: Any, t: Array, y: Array, scale: float, **kw: object) -> None:
    if np.all(np.isnan(y)):
        return
    et, ey = envelope(t, y)
    ax.step(et / scale, ey, where="post", lw=1.0, **kw)


def all_excursions(rec: BatchRecord) -> list[Excursion]:
    """Every excursion of the run (each harvest's and the open window's)."""
    return [e for h in rec.harvests for e in h.excursions] + rec.open_excursions


def run_plot(rec: BatchRecord) -> str | None:
    """O2 (or DO) / CO2 / temperature with set points and band, exposure clock, MFC flows."""
    s = rec.series
    if not s.get("t_s"):
        return None
    t = _array(s["t_s"])
    scale, xlabel = _scale(rec)
    dissolved = not np.all(np.isnan(_array(s.get("do_sp_pct", []) or [None])))
    fig, axes = plt.subplots(5, 1, figsize=(WIDTH_IN, 11.5), sharex=True, constrained_layout=True)
    ax_o2, ax_co2, ax_t, ax_exp, ax_q = axes
    key = "do" if dissolved else "o2"
    sp, band = _array(s[f"{key}_sp_pct"]), _array(s["o2_band_pct"])
    et, lo = envelope(t, sp - band)
    _, hi = envelope(t, sp + band)
    ax_o2.fill_between(et / scale, lo, hi, step="post", color="tab:green", alpha=0.2, lw=0)
    _step(ax_o2, t, sp, scale, color="tab:green", label="set point ± band")
    _line(ax_o2, t, _array(s[f"{key}_pct"]), scale, color="tab:blue", label="measured")
    if not np.all(np.isnan(_array(s.get("pericellular_o2_pct", []) or [None]))):
        peri = _array(s["pericellular_o2_pct"])
        _line(ax_o2, t, peri, scale, color="tab:purple", label="pericellular (est.)")
    ax_o2.set_ylabel("DO %-equiv." if dissolved else "O2 %")
    ax_o2.legend(loc="upper right", fontsize=7, ncols=3)
    _step(ax_co2, t, _array(s["co2_sp_pct"]), scale, color="tab:green", label="set point")
    _line(ax_co2, t, _array(s["co2_pct"]), scale, color="tab:orange", label="measured")
    ax_co2.set_ylabel("CO2 %")
    _step(ax_t, t, _array(s["temp_sp_c"]), scale, color="tab:green", label="set point")
    _line(ax_t, t, _array(s["temp_c"]), scale, color="tab:red", label="measured")
    ax_t.set_ylabel("temperature °C")
    _line(ax_exp, t, _array(s["exposure_s"]) / 3600.0, scale, color="tab:blue")
    for h in rec.harvests:
        if h.at_s is not None and h.exposure_s is not None:
            ax_exp.plot([h.at_s / scale], [h.exposure_s / 3600.0], "kv", ms=5)
    ax_exp.set_ylabel("exposure, h")
    for name, colour in (("n2", "tab:gray"), ("air", "tab:cyan"), ("o2", "tab:blue")):
        _step(ax_q, t, _array(s[f"{name}_lpm"]), scale, color=colour, label=name.upper())
    _step(ax_q, t, _array(s["co2_lpm"]), scale, color="tab:orange", label="CO2")
    ax_q.set_ylabel("MFC set point, L/min")
    ax_q.legend(loc="upper right", fontsize=7, ncols=4)
    ax_q.set_xlabel(xlabel)
    excursions = all_excursions(rec)
    for ax in axes:
        _shade(ax, rec, scale, excursions)
        ax.grid(alpha=0.3)
    _harvest_lines(axes, rec, scale)
    return _data_uri(fig)


def harvest_plot(rec: BatchRecord, h: HarvestRow) -> str | None:
    """O2 over one harvest's exposure window, with its band and its excursions shaded."""
    s = rec.series
    if h.opened_s is None or h.at_s is None or not s.get("t_s"):
        return None
    t = _array(s["t_s"])
    margin = max(60.0, 0.01 * (h.at_s - h.opened_s))
    keep = (t >= h.opened_s - margin) & (t <= h.at_s + margin)
    if not np.any(keep):
        return None
    scale, xlabel = _scale(rec)
    dissolved = not np.all(np.isnan(_array(s.get("do_sp_pct", []) or [None])))
    key = "do" if dissolved else "o2"
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 2.6), constrained_layout=True)
    tk = t[keep]
    if h.setpoint_pct is not None and h.band_pct is not None:
        ax.axhspan(
            h.setpoint_pct - h.band_pct, h.setpoint_pct + h.band_pct, color="tab:green", alpha=0.2
        )
        ax.axhline(h.setpoint_pct, color="tab:green", lw=1.0)
    _line(ax, tk, _array(s[f"{key}_pct"])[keep], scale, color="tab:blue")
    _shade(ax, rec, scale, h.excursions)
    ax.axvline(h.opened_s / scale, color="black", lw=0.8, ls=":")
    ax.axvline(h.at_s / scale, color="black", lw=0.9, ls="--")
    ax.set_title(f"{h.name}: exposure window, excursions shaded", fontsize=9)
    ax.set_ylabel("DO %-equiv." if dissolved else "O2 %")
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)
    return _data_uri(fig)
