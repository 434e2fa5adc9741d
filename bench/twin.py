"""Twin speed: simulated seconds per second of CPU for the 72 h and 48 h protocols (issue 15).

    python bench/twin.py [--repeat 3] [--baseline-rev REV | --no-baseline] [--no-command]
                         [--no-profile] [--no-doc]

Runs the digital twin (plant + sensors + the controller core the service runs, 1 s control
periods, one core) on the 72 h protocol (1 % O2, daily harvests) and the 48 h protocol (2 % O2),
both on the 100 L workstation, and measures side by side, interleaved, in fresh processes:

* **this tree**: the controller as the service runs it (headspace observer on), as installed:
  with the hot modules of the control core, the plant and the sensors compiled by mypyc
  (``pip install`` builds them where a C compiler is found; buildtools/compile_core.py) when
  that build is present and current, and in pure Python (``HYPOXIA_PURE_PYTHON=1``) beside it;
* **this tree, no observer (pure Python)**: ``ControllerTuning(observer=None)``, the issue-15
  controller, to show what the observer costs;
* **before** (``--baseline-rev``, repeatable; default the last commit before the fast twin and
  the last one before the observer, which issue 15 measured): the same runs on that commit's
  code, extracted with ``git archive`` into a temporary folder.

Each figure is the median of ``--repeat`` runs of simulated seconds per CPU second of the
worker process (CPU time, not wall time: the reference machine is shared; wall time is printed
too). Ratios are taken against the first baseline of the same run. Then the whole command of
issue 17 (``hypoxia simulate`` of the 72 h protocol with its CSV, plots and batch record) is timed
the same way, and a profile of the 48 h run shows where the time goes. Prints a markdown table and
writes it with this command into docs/performance.md (between the bench markers).

``--worker RECIPE VESSEL [--no-observer]`` is the measured process itself (one JSON line).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import controller.core
import simulators
from common.compiled import PURE_ENV
from controller.core.reactor import ControllerTuning
from controller.service.recipe_source import RecipeSource
from simulators.twin import run_twin
from simulators.vessel import load_vessel

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:twin:begin -->", "<!-- bench:twin:end -->"
BASELINE_REVS = (
    "038ca94e750777d11f1ee1c2a3d58ca88a660617",
    "ecabc95c8ff714820cb93ae92981be18b89d4eb0",
)
"""Baselines: the last commit before the fast twin (the observer's generic matrix loops), and the
last commit before the observer (the twin issue 15 measured at 26 000-45 000x)."""
TARGET_X = 100_000.0
"""Issue 15: simulated seconds per second on one core."""
CASES = (
    ("72 h: 1 % O2, daily harvests", "hypoxia-1pct-72h-daily", "workstation-100l"),
    ("48 h: 2 % O2", "hypoxia-2pct-48h", "workstation-100l"),
)
COMMAND = (
    "simulate",
    "examples/recipes/hypoxia-1pct-72h-daily.toml",
    "--vessel",
    "workstation-100l",
    "--json",
)


@dataclass(frozen=True)
class Variant:
    """One code path measured: its name, its tree, observer on or off, compiled build ignored."""

    name: str
    tree: Path
    observer: bool = True
    pure: bool = False


def worker(recipe_name: str, vessel_name: str, observer: bool) -> dict[str, Any]:
    """One twin run in this process and its speed.

    The code is whatever the import path found: a worker started on the baseline's tree runs the
    baseline (its folder comes first on ``PYTHONPATH``).
    """
    recipe = RecipeSource.from_file(ROOT / "examples" / "recipes" / f"{recipe_name}.toml").recipe
    vessel = load_vessel(vessel_name)
    tuning = None if observer else ControllerTuning(observer=None)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run_twin(recipe, vessel, tuning=tuning)
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    core = getattr(controller.core, "COMPILED", False)  # older trees: pure Python only
    plant = getattr(simulators, "COMPILED", False)
    code = {
        (True, True): "compiled (mypyc): control core, plant and sensors",
        (True, False): "compiled (mypyc): control core only",
        (False, True): "compiled (mypyc): plant and sensors only",
    }.get((core, plant), "pure Python")
    return {
        "sim_s": result.duration_s,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "code": code,
        "finished": result.finished,
    }


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path | None]:
    """The code of ``rev`` in a temporary folder (``git archive``; read-only on the repository)."""
    with tempfile.TemporaryDirectory(prefix="twin-baseline-") as tmp:
        try:
            data = subprocess.run(
                ["git", "-C", str(ROOT), "archive", "--format=tar", rev],  # noqa: S607
                check=True,
                capture_output=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"baseline {rev}: not available ({exc}); measuring this tree only")
            yield None
            return
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def _env(tree: Path, pure: bool) -> dict[str, str]:
    """Environment that makes ``tree``'s packages win over the editable install."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    env.pop(PURE_ENV, None)
    if pure:
        env[PURE_ENV] = "1"
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run a measured process; on failure stop with the end of what it said."""
    done = subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.decode(errors="replace").strip().splitlines()[-12:])
        raise SystemExit(f"{' '.join(args[1:])} (in {cwd}) failed:\n{tail}")
    return done


def measure(variant: Variant, recipe: str, vessel: str) -> dict[str, Any]:
    """Run one worker process on the variant's code and return its figures."""
    args = [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, vessel]
    if not variant.observer:
        args.append("--no-observer")
    env = _env(variant.tree, variant.pure)
    done = _run(args, variant.tree, env)
    figures: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return figures


def time_command(variant: Variant, out_dir: Path) -> dict[str, float]:
    """Wall and CPU time of the whole ``hypoxia simulate`` command on the variant's code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    args = [sys.executable, "-m", "hypoxia", *COMMAND, "--out", str(out_dir)]
    _run(args, variant.tree, _env(variant.tree, variant.pure))
    wall_s = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall_s, "cpu_s": cpu_s}


def profile_excerpt(lines: int = 14) -> str:
    """cProfile of the 48 h run in this process: the functions that take the time (own time)."""
    _, recipe_name, vessel_name = CASES[1]
    recipe = RecipeSource.from_file(ROOT / "examples" / "recipes" / f"{recipe_name}.toml").recipe
    prof = cProfile.Profile()
    prof.enable()
    run_twin(recipe, load_vessel(vessel_name))
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(lines)
    body = text.getvalue()
    table = body[body.index("ncalls") :].rstrip()
    table = table.replace(str(ROOT) + "/", "").replace(sys.prefix, "<venv>")
    return table.replace(sys.base_prefix, "<python>")


def _median(values: list[float]) -> float:
    return statistics.median(values)


def run(args: argparse.Namespace) -> str:
    """Measure everything and return the markdown block for the doc."""
    variants = [Variant("this tree", ROOT)]
    if controller.core.COMPILED or simulators.COMPILED:
        variants = [
            Variant("this tree, as installed (compiled, mypyc)", ROOT),
            Variant("this tree, pure Python", ROOT, pure=True),
        ]
    variants.append(
        Variant("this tree, no observer (pure Python)", ROOT, observer=False, pure=True)
    )
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    commands: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        for rev in args.baseline_rev or []:
            base = stack.enter_context(baseline_tree(rev))
            if base is not None:
                variants.append(Variant(f"before ({rev[:7]})", base, pure=True))
        for rep in range(args.repeat):
            for label, recipe, vessel in CASES:
                for v in variants:
                    fig = measure(v, recipe, vessel)
                    rows.setdefault((label, v.name), []).append(fig)
                    speed = fig["sim_s"] / fig["cpu_s"]
                    print(f"[{rep + 1}/{args.repeat}] {label} | {v.name}: {speed:,.0f} x real time")
            if args.command:
                for v in variants:
                    if not v.observer:
                        continue
                    with tempfile.TemporaryDirectory() as out:
                        fig_c = time_command(v, Path(out))
                    commands.setdefault(v.name, []).append(fig_c)
                    print(
                        f"[{rep + 1}/{args.repeat}] command | {v.name}: {fig_c['cpu_s']:.1f} s CPU"
                    )
    return render(args, variants, rows, commands)


def render(
    args: argparse.Namespace,
    variants: list[Variant],
    rows: dict[tuple[str, str], list[dict[str, Any]]],
    commands: dict[str, list[dict[str, float]]],
) -> str:
    """The markdown block: speeds, ratios to the baseline, the command, what limits it."""
    bases = [v.name for v in variants if v.name.startswith("before")]
    first = rows[(CASES[0][0], variants[0].name)][0]
    cmd = "python bench/twin.py" + (f" --repeat {args.repeat}" if args.repeat != 3 else "")
    lines = [
        f"Command: `{cmd}` - {date()} - medians of {args.repeat} runs each, interleaved, one "
        f"process per run; CPython {platform.python_version()}, this tree's first row: "
        f"{first['code']}.",
        "",
        "| protocol | code | simulated s per CPU s (x real time) | per wall s | "
        "us per control period | " + "".join(f"vs {b} | " for b in bases) + "target |",
        "|---|---|---|---|---|" + "---|" * len(bases) + "---|",
    ]
    best = 0.0
    for label, _recipe, _vessel in CASES:
        base_speeds = [_median([r["sim_s"] / r["cpu_s"] for r in rows[(label, b)]]) for b in bases]
        for v in variants:
            figs = rows[(label, v.name)]
            speed = _median([r["sim_s"] / r["cpu_s"] for r in figs])
            wall = _median([r["sim_s"] / r["wall_s"] for r in figs])
            ratios = "".join(f"**{speed / b:.2f}x** | " for b in base_speeds)
            mine = v.name == variants[0].name
            if mine:
                best = max(best, speed)
            target = f"{TARGET_X:,.0f}x" if mine else ""
            lines.append(
                f"| {label} | {v.name} | {speed:,.0f} | {wall:,.0f} | {1e6 / speed:.1f} | "
                f"{ratios}{target} |"
            )
    if commands:
        lines += [
            "",
            "Whole command (issue 17: not slower than about 10 s), CPU s of the process, median:",
            "",
            "```bash",
            "time hypoxia " + " ".join(COMMAND) + " --out DIR",
            "```",
            "",
            "| code | CPU s | wall s |",
            "|---|---|---|",
        ]
        for name, figs_c in commands.items():
            cpu = _median([f["cpu_s"] for f in figs_c])
            wall = _median([f["wall_s"] for f in figs_c])
            lines.append(f"| {name} | {cpu:.1f} | {wall:.1f} |")
    if args.profile and best < TARGET_X:
        lines += ["", limits_text(first["code"] != "pure Python", best), "", "```"]
        lines += [profile_excerpt(), "```"]
    return "\n".join(lines)


def limits_text(compiled: bool, best: float) -> str:
    """What keeps the twin below the target (the profile follows)."""
    per_step_us = 1e6 / best
    if compiled:
        what = (
            "every module a twin period runs through is compiled (the observer, loops, "
            "ReactorController, recipe engine, exposure clocks, medium layer, plant, sensors "
            "and the twin's loop); outside compiled code cProfile still sees `random.gauss`, "
            "the standard library's Python code, three draws per period (about 15 % of the "
            "time; kept: the noise of a seed stays what it was). The rest is the compiled "
            "code itself: floats boxed across the two compilation groups (controller/core and "
            "simulators are built separately, so calls and attribute reads between them go "
            "through the generic Python API) and reads of pydantic models (vessel, recipe, "
            "tunings) every period. Reaching 100 000x needs the period under 10 us: one "
            "compilation group, the per-period parameters copied out of the pydantic models "
            "into native classes, and a Gaussian source in C (numpy's generator, which would "
            "change every seed's noise)"
        )
    else:
        what = (
            "per control period the twin runs the whole controller core in pure Python (the "
            "observer's six-state and three-state Kalman filters, three or four loops, the "
            "plant, three sensors, the recipe engine): a few hundred interpreted float "
            "operations and some forty Python calls; the compiled build (`pip install` with a "
            "C compiler, or `scripts/build-compiled`) takes the hottest part"
        )
    return (
        f"Below the {TARGET_X:,.0f}x target ({per_step_us:.0f} us per period at best): {what}. "
        "Where the time goes (cProfile of the 48 h run on this tree's default code, own time; "
        "compiled functions show as one `{method ...}` line each; cProfile inflates call-heavy "
        "code):"
    )


def date() -> str:
    """Today (UTC), for the doc."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def write_doc(block: str) -> None:
    """Put ``block`` between the twin markers of docs/performance.md."""
    doc = DOC.read_text()
    if BEGIN not in doc:
        doc = doc.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main() -> None:
    """Parse arguments; run as the bench or as one measured worker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "VESSEL"), help=argparse.SUPPRESS)
    parser.add_argument("--no-observer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--baseline-rev", action="append", help="commit to compare with (repeatable)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="this tree only")
    parser.add_argument("--no-command", dest="command", action="store_false")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    if args.no_baseline:
        args.baseline_rev = []
    elif not args.baseline_rev:
        args.baseline_rev = list(BASELINE_REVS)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], not args.no_observer)))
        return
    block = run(args)
    print(block)
    if not args.no_doc:
        write_doc(block)
        print(f"written into {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
