"""Control at the physical limit, measured on the digital twin (issue 6).

    python bench/control.py [--quick] [--no-doc]

For each reference vessel and set point (5 %, 2 %, 1 %, anoxia 0.05 %) a fastest descent, a
steady hold and a 30 s door opening; for the bioreactor also the DO cascade (T8). Then the
robustness corners: the controller's model wrong by +/- 50 % in volume, leak and gain and +/- 30 %
in delay while the plant keeps the true vessel. Prints markdown tables, writes PNG plots to
bench/out/ and the tables into docs/performance.md (between the bench markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_cases import ANOXIA_PCT, Case, Outcome, run_case

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:control:begin -->", "<!-- bench:control:end -->"
VESSELS = ("workstation-100l", "incubator-170l", "bioreactor-2l")


def cases(quick: bool, observer: bool = True) -> tuple[list[Case], list[Case]]:
    points = (1.0,) if quick else (5.0, 2.0, 1.0, ANOXIA_PCT)
    nominal = [
        Case(v, sp, keep_series=sp == 1.0, observer=observer) for v in VESSELS for sp in points
    ]
    nominal.append(Case("bioreactor-2l", 1.0, kind="do", observer=observer))
    if quick:
        corners = [(1.5, 0.5, 1.5, 0.7), (0.5, 1.5, 0.5, 1.3)]
    else:
        corners = list(itertools.product((0.5, 1.5), (0.5, 1.5), (0.5, 1.5), (0.7, 1.3)))
    robust = [
        Case(v, 1.0, volume=a, leak=b, gain=c, delay=d, observer=observer)
        for v in VESSELS
        for a, b, c, d in corners
    ]
    return nominal, robust


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _le(value: Any, limit: float) -> bool:
    return value is not None and value <= limit + 1e-12


LIMITS = {
    "T1": 1.10,  # time to +/-0.1 % over the same-signal minimum
    "T2": 0.05,  # chamber undershoot, % abs
    "T3": 1.15,  # door recovery over the same-signal minimum; integrated excess ratio
    "T4_mean": 0.02,
    "T4_2sigma": 0.05,
    "T5": 1.03,
    "T6_dev": 0.3,
    "T6": 1.15,  # CO2 door recovery over the same-signal minimum
    "T7_dev": 0.1,
    "T7_recovery_s": 600.0,
    "T7_overshoot": 0.2,
    "travel": 0.25,  # MFC travel over the baseline's
    "Ms": 1.6,
}
"""Acceptance limits of issue 14 (docs/performance-control.md)."""

BASELINE_TRAVEL: dict[tuple[str, float], tuple[float, float]] = {
    ("workstation-100l", 5.0): (72.43, 17.96),
    ("workstation-100l", 2.0): (175.8, 19.89),
    ("workstation-100l", 1.0): (349.6, 25.49),
    ("incubator-170l", 5.0): (96.45, 15.2),
    ("incubator-170l", 2.0): (265.2, 23.29),
    ("incubator-170l", 1.0): (547.7, 35.41),
    ("incubator-170l", 0.05): (5704, 310.3),
    ("bioreactor-2l", 5.0): (0.1608, 0.1151),
    ("bioreactor-2l", 2.0): (0.1607, 0.1148),
    ("bioreactor-2l", 1.0): (0.1608, 0.115),
    ("bioreactor-2l", 0.05): (0.1605, 0.1151),
}
"""N2 and CO2 MFC travel, (L/min)/h over the steady window, measured by this bench with the
controller before issue 14 (commit 08adcfd): the travel target is a quarter of these."""


def _travel_ok(m: dict[str, Any], vessel: str, sp_pct: float) -> bool:
    base = BASELINE_TRAVEL.get((vessel, sp_pct))
    if base is None:
        return True
    return all(
        _le(m.get(f"{gas}_travel_lpm_per_h"), LIMITS["travel"] * ref + 1e-9)
        for gas, ref in zip(("n2", "co2"), base, strict=True)
    )


def checks(m: dict[str, Any], vessel: str = "", sp_pct: float = 1.0) -> dict[str, bool]:
    """Pass/fail per target for one gas case."""
    g = m.get
    lim = LIMITS
    return {
        "T1": _le(g("ratio"), lim["T1"]),
        "T2": _le(g("undershoot_pct"), lim["T2"]),
        "T3": _le(g("recovery_ratio"), lim["T3"]) and _le(g("excess_ratio"), lim["T3"]),
        "T4": _le(abs(g("mean_err_pct") or 0.0), lim["T4_mean"])
        and _le(g("two_sigma_pct"), lim["T4_2sigma"]),
        "T5": _le(g("n2_ratio"), lim["T5"]),
        "T6": _le(g("co2_purge_dev_pct"), lim["T6_dev"])
        and _le(g("co2_recovery_ratio"), lim["T6"]),
        "T7": _le(g("temp_dev_k"), lim["T7_dev"])
        and _le(g("temp_recovery_s"), lim["T7_recovery_s"])
        and _le(g("temp_overshoot_k"), lim["T7_overshoot"]),
        "travel": _travel_ok(m, vessel, sp_pct),
        "Ms": _le(g("ms"), lim["Ms"]),
    }


def nominal_table(outcomes: list[Outcome]) -> str:
    head = (
        "| vessel | O2 set point | T1: to +/-0.1 % as read, s (minimum) = ratio [old basis] "
        "| T2 undershoot % | T4 mean / 2 sigma % | MFC travel N2 / CO2 (L/min)/h [baseline] "
        "| T3 door: recovery as read, s (minimum) = ratio / excess ratio | T5 N2 L (minimum) "
        "| T6 CO2: purge dev % / door recovery as read, s (minimum) = ratio "
        "| T7 temp: dev K / door recovery s / overshoot K | misses |\n|" + "---|" * 11
    )
    lines = [head]
    for o in outcomes:
        c, m = o.case, o.metrics
        if c.kind != "gas":
            continue
        if not o.reachable:
            lines.append(f"| {c.vessel} | {c.sp_pct:g} % | {o.note} |" + " |" * 8)
            continue
        miss = [k for k, ok in checks(m, c.vessel, c.sp_pct).items() if not ok and k != "Ms"]
        base = BASELINE_TRAVEL.get((c.vessel, c.sp_pct))
        base_txt = f" [{_f(base[0])} / {_f(base[1])}]" if base else ""
        cells = [
            c.vessel,
            f"{c.sp_pct:g} %",
            f"{_f(m['t_band_read_s'])} ({_f(m['t_band_min_s'])}) = {_f(m['ratio'])} "
            f"[{_f(m['ratio_chamber_basis'])}]",
            _f(m["undershoot_pct"], 2),
            f"{_f(m['mean_err_pct'], 2)} / {_f(m['two_sigma_pct'], 2)}",
            f"{_f(m['n2_travel_lpm_per_h'])} / {_f(m['co2_travel_lpm_per_h'])}{base_txt}",
            f"{_f(m['recovery_read_s'])} ({_f(m['recovery_min_s'])}) = "
            f"{_f(m['recovery_ratio'])} / {_f(m['excess_ratio'])}",
            f"{_f(m['n2_l'], 4)} ({_f(m['n2_min_l'], 4)}) = {_f(m['n2_ratio'])}x",
            f"{_f(m['co2_purge_dev_pct'], 2)} / {_f(m['co2_recovery_read_s'])} "
            f"({_f(m['co2_recovery_min_s'])}) = {_f(m['co2_recovery_ratio'])}",
            f"{_f(m['temp_dev_k'], 2)} / {_f(m['temp_recovery_s'])} / "
            f"{_f(m['temp_overshoot_k'], 2)}",
            ", ".join(miss) or "none",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def do_table(outcomes: list[Outcome]) -> str:
    lines = [
        "| vessel | DO set point | to +/-0.1 %-eq h | T8 minimum h (ratio) | minimum with uptake "
        "h (ratio) | mean error %-eq | 2 sigma reading uM | 2 sigma medium uM (probe noise "
        "removed) | max dev uM | headspace O2 % start -> end |\n|" + "---|" * 10
    ]
    for o in outcomes:
        c, m = o.case, o.metrics
        if c.kind != "do":
            continue
        if m.get("t_band_s") is None:
            lines.append(f"| {c.vessel} | {c.sp_pct:g} % | did not settle |" + " |" * 7)
            continue
        lines.append(
            f"| {c.vessel} | {c.sp_pct:g} %-eq | {_f(m['t_band_s'] / 3600)} "
            f"| {_f(m['t_bb_s'] / 3600)} ({_f(m['ratio'])}) | {_f(m['t_bb_uptake_s'] / 3600)} "
            f"({_f(m['ratio_uptake'])}) | {_f(m['mean_err_pct'], 2)} | {_f(m['two_sigma_um'])} "
            f"| {_f(m['two_sigma_medium_um'])} | {_f(m['max_dev_um'])} "
            f"| {_f(m['headspace_start_pct'])} -> {_f(m['headspace_end_pct'])} |"
        )
    return "\n".join(lines)


def robust_table(outcomes: list[Outcome]) -> str:
    lines = [
        "| vessel | V x | Q_L x | gain x | θ x | Ms (O2) adapted [before] | T1 ratio "
        "| T2 undershoot % | "
        "T3 recovery / excess | T4 mean / 2 sigma % | adapted V / true V (model) "
        "| result |\n|" + "---|" * 12
    ]
    for o in outcomes:
        c, m = o.case, o.metrics
        result = checks(m)
        failed = [k for k in ("T1", "T2", "T3", "T4", "Ms") if not result[k]]
        adapted = m.get("adapted_volume_x")
        lines.append(
            f"| {c.vessel} | {c.volume:g} | {c.leak:g} | {c.gain:g} | {c.delay:g} "
            f"| {_f(m['ms'])} [{_f(m.get('ms_initial'))}] "
            f"| {_f(m['ratio'])} | {_f(m['undershoot_pct'], 2)} "
            f"| {_f(m['recovery_ratio'])} / {_f(m['excess_ratio'])} "
            f"| {_f(m['mean_err_pct'], 2)} / {_f(m['two_sigma_pct'], 2)} "
            f"| {_f(adapted)} ({_f(c.volume * c.gain)}) "
            f"| {'pass' if not failed else 'FAIL ' + ', '.join(failed)} |"
        )
    passed = sum(1 for o in outcomes if all(checks(o.metrics)[k] for k in ("T1", "T2", "T3", "T4")))
    ms_max = max((o.metrics["ms"] for o in outcomes), default=math.nan)
    lines.append(
        f"\nT1-T4 met in {passed} of {len(outcomes)} robustness runs; largest Ms {_f(ms_max)}."
    )
    return "\n".join(lines)


def plot(nominal: list[Outcome], robust: list[Outcome]) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from control_cases import warm_vessel  # noqa: PLC0415

    from controller.core.process import X_AIR_O2  # noqa: PLC0415

    OUT.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = [o for o in nominal if o.series]
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 3 * len(shown)), squeeze=False)
    for ax, o in zip(axes[:, 0], shown, strict=True):
        s, m = o.series, o.metrics
        t0 = 900.0
        ts = [(t - t0) / 60 for t in s["t_s"]]
        ax.plot(ts, s["o2_true_pct"], label="chamber O2 (true)")
        ax.plot(ts, s["o2_pct"], label="O2 reading", alpha=0.6)
        model = warm_vessel(o.case.vessel).process_model()
        q = model.n2_max_lpm + model.leak_lpm + 0.0526 * (model.n2_max_lpm + model.leak_lpm)
        x_inf = model.leak_lpm * X_AIR_O2 / q
        tau = model.volume_l / q
        x0 = m["x0"]
        ideal = [
            max(o.case.sp_pct, 100 * (x_inf + (x0 - x_inf) * 2.718281828 ** (-t / tau)))
            if t >= 0
            else None
            for t in ts
        ]
        ax.plot(ts, ideal, "k--", label="bang-bang minimum", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlim(-5, (m["t_bb_s"] * 3) / 60)
        ax.set_title(f"{o.case.vessel}: fastest descent to {o.case.sp_pct:g} %")
        ax.set_xlabel("min from ramp start")
        ax.set_ylabel("O2 %")
        ax.legend(fontsize=8)
    paths.append(_save(plt, fig, "control_descent.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for vessel in VESSELS:
        pts = [o for o in robust if o.case.vessel == vessel]
        x = [(o.metrics["ratio"] or math.nan) / LIMITS["T1"] for o in pts]
        ax.scatter(x, [o.metrics["undershoot_pct"] for o in pts], label=vessel)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axhline(LIMITS["T2"], color="k", lw=0.8)
    ax.set_xlabel("T1 ratio / limit (≤ 1 passes)")
    ax.set_ylabel(f"T2 undershoot % (≤ {LIMITS['T2']:g} passes)")
    ax.set_title("robustness corners: model error in V, Q_L, gain, θ")
    ax.legend(fontsize=8)
    paths.append(_save(plt, fig, "control_robustness.png"))
    return paths


def _save(plt: Any, fig: Any, name: str) -> Path:
    fig.tight_layout()
    fig.savefig(OUT / name, dpi=90)
    plt.close(fig)
    return OUT / name


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Control performance\n\n{BEGIN}\n{END}\n"
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced grid (1 %, 2 corners)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the doc tables")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--no-observer",
        action="store_true",
        help="the controller before issue 14 (loops on filtered readings); implies --no-doc",
    )
    args = parser.parse_args()
    if args.no_observer:
        args.no_doc = True
    nominal, robust = cases(args.quick, observer=not args.no_observer)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        done = list(pool.map(run_case, [*nominal, *robust]))
    elapsed = time.perf_counter() - start
    nominal_out, robust_out = done[: len(nominal)], done[len(nominal) :]
    command = (
        "python bench/control.py"
        + (" --quick" if args.quick else "")
        + (" --no-observer" if args.no_observer else "")
    )
    text = "\n\n".join(
        [
            f"Command: `{command}` - {len(done)} twin runs in {elapsed:.0f} s on "
            f"{args.workers} processes.",
            "### Nominal model: set points, door opening, gas use\n\n" + nominal_table(nominal_out),
            "### Bioreactor dissolved O2 (T8), uptake ramping 5x over 24 h\n\n"
            + do_table(nominal_out),
            "### Robustness (T11): controller model wrong, plant true, 1 % O2\n\n"
            + robust_table(robust_out),
        ]
    )
    paths = plot(nominal_out, robust_out)
    dump = [
        {"case": dataclasses.asdict(o.case), "reachable": o.reachable, "metrics": o.metrics}
        for o in done
    ]
    (OUT / "control_metrics.json").write_text(json.dumps(dump, indent=1, default=str))
    print(text)
    print("\nplots: " + ", ".join(str(p.relative_to(ROOT)) for p in paths))
    if not args.no_doc:
        write_doc(text)
        print(f"written: {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
