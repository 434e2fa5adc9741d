"""Reactors per process: how many reactors one ``hypoxia run`` carries at 1 s cycles.

For each N, a generated site of N reactors — six Modbus TCP devices each (O2, CO2, temperature
with its heater stage, and three MFCs: N2, air, CO2), ten reactors per gateway port — is served
by ``hypoxia simulate-devices`` in a process of its own, and one ``hypoxia run`` process runs the
2 % / 48 h recipe on every reactor at 1 s cycles, publishing to a Mosquitto broker (a third
process; nobody subscribes). After a warm-up the bench measures, over a window:

* **lateness** of every cycle — from its tick to its outputs written — as the controller itself
  reports it in each telemetry message (``lateness_ms``, read back from the journal's outbox):
  p50 / p99 / max; and **overruns** (ticks that passed while a cycle still ran; ``overruns``);
* cycles per reactor-second (a missed cycle shows here too) and the share of bad readings;
* CPU of the controller process and of the simulator process (fractions of one core), and the
  controller's resident memory.

N rises until p99 lateness passes 200 ms or a cycle is missed; the largest N that passed is
reported, with CPU and memory per reactor. Every N is run twice, side by side: with the
scheduling of the service (``--schedule spread``: reactors at their own phases, gateways read
over ``connections`` TCP connections, journal group commit) and with the scheduling before it
(``--schedule queued``, one connection per gateway), as the baseline.

Run: ``python bench/reactors.py [--steps 50,100,200,300,400,500] [--window 20] [--no-write]``
(add ``--profile N`` to profile the controller at N reactors with cProfile). The figures go to
docs/performance.md between the ``bench:reactors`` markers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pstats
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scale_kit import device_tables, workstation_process  # noqa: E402

BIN = Path(sys.executable).parent
REACTORS_PER_PORT = 10
LATENESS_LIMIT_MS = 200.0
RECIPE = ROOT / "examples/recipes/hypoxia-2pct-48h.toml"

PROCESS = workstation_process(air_max_lpm=10.0)

O2_POINTS = """[[reactors.devices.map.points]]
name = "o2_pct"
kind = "input"
address = 0
dtype = "float32"
unit = "%"
valid_min = 0
valid_max = 100"""
TEMP_POINTS = """[[reactors.devices.map.points]]
name = "temp_c"
kind = "input"
address = 0
dtype = "float32"
unit = "degC"
valid_min = -20
valid_max = 80
[[reactors.devices.map.points]]
name = "heater_w"
kind = "holding"
address = 10
dtype = "uint16"
unit = "W"
writable = true
valid_min = 0
valid_max = 1000"""
DEVICES = (
    ("o2", "register_map", f'roles = {{ o2 = "o2_pct" }}\n{O2_POINTS}'),
    ("co2", "vaisala_gmp25x", 'model = "GMP251"\no2_compensation = false'),
    (
        "temp",
        "register_map",
        f'roles = {{ temperature = "temp_c", heater = "heater_w" }}\n{TEMP_POINTS}',
    ),
    *(
        (f"mfc-{gas}", "alicat_modbus", f'role = "{gas}_mixer"\nfull_scale_lpm = {full_scale}')
        for gas, full_scale in (("n2", 20.0), ("air", 10.0), ("co2", 2.0))
    ),
)
"""Each reactor's instruments: (name before the reactor id, driver, driver keys)."""

TRANSACTIONS_PER_REACTOR = 1 + 2 + 1 + 2 + 3 * 3
"""Worst case per cycle (controller/service/budget.py): O2 1, GMP251 2, temperature 1, heater 2,
three mixers 3 each."""


@dataclass(frozen=True, slots=True)
class Mode:
    """One way of running the service."""

    name: str
    schedule: str  # hypoxia run --schedule
    connections: int  # per gateway port


SPREAD = Mode("spread", "spread", 16)
QUEUED = Mode("queued (baseline)", "queued", 1)


def bus_timeout_s(connections: int) -> float:
    """The largest per-try timeout the site check accepts for one gateway port (retries 0)."""
    per_port = REACTORS_PER_PORT * TRANSACTIONS_PER_REACTOR
    return math.floor(800.0 / math.ceil(per_port / connections)) / 1000.0


def site_text(n: int, state_dir: Path, base_port: int, broker_port: int, mode: Mode) -> str:
    """A site of ``n`` reactors, ten per gateway port."""
    ports = math.ceil(n / REACTORS_PER_PORT)
    timeout_s = bus_timeout_s(mode.connections)
    parts = [
        'site = "bench"\nsimulated = true\n'
        f'state_dir = "{state_dir}"\n\n'
        f'[broker]\nembedded = false\nhost = "127.0.0.1"\nport = {broker_port}\n\n'
        "[page]\nenabled = false\n\n"
    ]
    for g in range(ports):
        parts.append(  # noqa: PERF401 - one table per port, written out
            f'[buses.gw{g}]\nkind = "tcp"\nhost = "127.0.0.1"\nport = {base_port + g}\n'
            f"timeout_s = {timeout_s}\nretries = 0\nconnections = {mode.connections}\n\n"
        )
    for i in range(n):
        g, k = divmod(i, REACTORS_PER_PORT)
        rid = f"r{i:04d}"
        devices = [(f"{name}-{rid}", driver, body) for name, driver, body in DEVICES]
        parts.append(f'[[reactors]]\nid = "{rid}"\n\n{PROCESS}\n')
        parts.append(device_tables(f"gw{g}", k * len(DEVICES) + 1, devices) + "\n\n")
    parts.append('[[users]]\nname = "bench"\nrole = "engineer"\n')
    return "".join(parts)


@dataclass(slots=True)
class Result:
    """One run of N reactors in one mode."""

    mode: str
    n: int
    started: bool = False
    start_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    overruns: int = 0
    cycles_per_s: float = 0.0
    bad_frac: float = 0.0
    cpu_run: float = 0.0
    cpu_sim: float = 0.0
    rss_mb: float = 0.0
    note: str = ""

    @property
    def passed(self) -> bool:
        """p99 lateness within the limit and no cycle missed."""
        return (
            self.started
            and self.p99_ms <= LATENESS_LIMIT_MS
            and self.overruns == 0
            and self.cycles_per_s >= 0.97
        )


def _free_port_block(count: int) -> int:
    """A base port with ``count`` free ports after it (below the ephemeral range)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _telemetry(journal: Path, since_ms: int, until_ms: int) -> list[dict[str, object]]:
    """Telemetry payloads of the window, read from the journal's outbox (read-only)."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute("SELECT payload FROM outbox WHERE topic LIKE '%/telemetry'").fetchall()
    finally:
        conn.close()
    out = []
    for (payload,) in rows:
        msg = json.loads(payload)
        if since_ms <= int(msg["ts_ms"]) < until_ms:
            out.append(msg)
    return out


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(
    n: int, mode: Mode, warmup_s: float, window_s: float, profile: Path | None = None
) -> Result:
    """Serve, run and measure ``n`` reactors in ``mode``."""
    result = Result(mode.name, n)
    with tempfile.TemporaryDirectory(prefix="bench-reactors-") as tmp_name:
        tmp = Path(tmp_name)
        ports = math.ceil(n / REACTORS_PER_PORT)
        base = _free_port_block(ports + 1)
        broker_port = base + ports
        site = tmp / "site.toml"
        site.write_text(site_text(n, tmp / "state", base, broker_port, mode))
        (tmp / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        logs = {k: (tmp / f"{k}.log").open("wb") for k in ("broker", "sim", "run")}
        broker = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(tmp / "mosquitto.conf")],
            stdout=logs["broker"],
            stderr=subprocess.STDOUT,
        )
        sim = subprocess.Popen(
            [str(BIN / "hypoxia"), "simulate-devices", str(site), "--vessel", "workstation-100l"],
            stdout=logs["sim"],
            stderr=subprocess.STDOUT,
        )
        run: subprocess.Popen[bytes] | None = None
        try:
            _wait_for(tmp / "sim.log", "ready", 120.0, sim)
            cmd = [str(BIN / "hypoxia")]
            if profile is not None:
                cmd = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "hypoxia"]
            cmd += ["run", str(site), str(RECIPE), "--schedule", mode.schedule]
            t0 = time.monotonic()
            run = subprocess.Popen(cmd, stdout=logs["run"], stderr=subprocess.STDOUT)
            _wait_for(tmp / "run.log", "control socket:", 600.0, run)
            result.start_s = time.monotonic() - t0
            result.started = True
            time.sleep(warmup_s)
            procs = {"run": run.pid, "sim": sim.pid}
            cpu0 = {k: _cpu_s(p) for k, p in procs.items()}
            w0, ms0 = time.monotonic(), int(time.time() * 1000)
            time.sleep(window_s)
            w1, ms1 = time.monotonic(), int(time.time() * 1000)
            cpu1 = {k: _cpu_s(p) for k, p in procs.items()}
            result.rss_mb = _rss_mb(run.pid)
            result.cpu_run = (cpu1["run"] - cpu0["run"]) / (w1 - w0)
            result.cpu_sim = (cpu1["sim"] - cpu0["sim"]) / (w1 - w0)
            _stop(run)
            _measure(result, _telemetry(tmp / "state/journal.sqlite", ms0, ms1), n, window_s)
        except RuntimeError as exc:
            result.note = str(exc)
        finally:
            if run is not None:
                _stop(run)
            _stop(sim)
            broker.terminate()
            broker.wait()
            for f in logs.values():
                f.close()
            if not result.started:
                result.note += " | " + (tmp / "run.log").read_text(errors="replace")[-600:]
    return result


def _wait_for(log: Path, text: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.stem} exited ({proc.returncode}) before '{text}'")
        time.sleep(0.2)
    raise RuntimeError(f"{log.stem}: no '{text}' within {timeout_s:.0f} s")


def _measure(result: Result, messages: list[dict[str, object]], n: int, window_s: float) -> None:
    """Lateness percentiles, overruns, cycle rate and bad readings of the window."""
    late = sorted(
        float(str(m["lateness_ms"])) for m in messages if m.get("lateness_ms") is not None
    )
    if not late:
        result.note = "no telemetry in the window"
        return
    result.p50_ms = statistics.median(late)
    result.p99_ms = late[min(len(late) - 1, math.ceil(0.99 * len(late)) - 1)]
    result.max_ms = late[-1]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for m in messages:
        rid, over = str(m["reactor"]), int(str(m["overruns"]))
        first[rid] = min(first.get(rid, over), over)
        last[rid] = max(last.get(rid, over), over)
    result.overruns = sum(last[r] - first[r] for r in last)
    result.cycles_per_s = len(messages) / (n * window_s)
    qualities = [m.get(k) for m in messages for k in ("o2_quality", "co2_quality", "temp_quality")]
    result.bad_frac = sum(1 for q in qualities if q not in ("good", "simulated")) / len(qualities)


def _row(r: Result) -> str:
    if not r.started:
        return f"| {r.n} | {r.mode} | did not start: {r.note.strip()[:120]} | | | | | | |"
    verdict = "pass" if r.passed else "**fail**"
    return (
        f"| {r.n} | {r.mode} | {r.p50_ms:.0f} / {r.p99_ms:.0f} / {r.max_ms:.0f} | {r.overruns} "
        f"| {r.cycles_per_s:.3f} | {100 * r.bad_frac:.2f} % | {100 * r.cpu_run:.0f} % "
        f"({1000 * r.cpu_run / r.n:.1f} ms/s per reactor) | {100 * r.cpu_sim:.0f} % "
        f"| {r.rss_mb:.0f} MB ({1024 * r.rss_mb / r.n:.0f} kB per reactor) | {verdict} |"
    )


HEADER = (
    "| N | scheduling | lateness p50 / p99 / max, ms | overruns | cycles per reactor-s "
    "| bad readings | controller CPU (of one core) | simulator CPU | controller RSS | "
    "≤ 200 ms p99, no cycle missed |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    """Ramp N in both modes, print the table, write it into docs/performance.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="50,100,200,300,400,500,600,800")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--modes", default="spread,queued")
    parser.add_argument("--profile", type=int, default=0, help="profile the controller at N")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.profile:
        prof = Path(tempfile.gettempdir()) / f"bench-reactors-{args.profile}.prof"
        r = run_once(args.profile, SPREAD, args.warmup, args.window, profile=prof)
        print(HEADER)
        print(_row(r))
        with contextlib.suppress(FileNotFoundError):
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
        return
    modes = [m for m in (SPREAD, QUEUED) if m.schedule in args.modes.split(",")]
    steps = [int(x) for x in args.steps.split(",")]
    results: list[Result] = []
    failed: set[str] = set()
    print(HEADER, flush=True)
    for n in steps:
        for mode in modes:
            if mode.name in failed:
                continue
            r = run_once(n, mode, args.warmup, args.window)
            results.append(r)
            print(_row(r), flush=True)
            if not r.passed:
                failed.add(mode.name)
        if len(failed) == len(modes):
            break
    summary = []
    for mode in modes:
        ok = [r for r in results if r.mode == mode.name and r.passed]
        best = max(ok, key=lambda r: r.n) if ok else None
        if best is None:
            summary.append(f"- {mode.name}: no N passed")
            continue
        summary.append(
            f"- **{mode.name}: {best.n} reactors** pass (p99 {best.p99_ms:.0f} ms); controller "
            f"{1000 * best.cpu_run / best.n:.2f} ms CPU per reactor-second, "
            f"{1024 * best.rss_mb / best.n:.0f} kB RSS per reactor; simulator at "
            f"{100 * best.cpu_sim:.0f} % of a core"
        )
    print("\n".join(summary))
    if not args.no_write:
        _write(results, summary, args)


def _write(results: list[Result], summary: list[str], args: argparse.Namespace) -> None:
    doc = ROOT / "docs/performance.md"
    text = doc.read_text()
    begin, end = "<!-- bench:reactors:begin -->", "<!-- bench:reactors:end -->"
    body = "\n".join(
        [
            begin,
            f"Command: `python bench/reactors.py --steps {args.steps} --warmup {args.warmup:g} "
            f"--window {args.window:g}` ({time.strftime('%Y-%m-%d', time.gmtime())}, "
            f"{os.cpu_count()} cores shared with other work).",
            "",
            HEADER,
            *(_row(r) for r in results),
            "",
            *summary,
            end,
        ]
    )
    if begin in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    doc.write_text(text)


if __name__ == "__main__":
    main()
