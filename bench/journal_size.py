"""Journal size: bytes per reactor-second, and the plateau the outbox pruning holds it to.

The real service in-process on a stepped clock (the example site's workstation, every instrument
simulated over its wire protocol, tests/service_kit.py), its MQTT link publishing to a real
Mosquitto (so messages are acknowledged and become prunable), for ``--seconds`` of run time, twice:

* **growth**: a replay window longer than the run — nothing is pruned; the journal's size over
  the run's reactor-seconds is what a reactor costs per second;
* **bounded**: a replay window of ``--window-s`` (pruned every ``--prune-every-s``) — the size
  reached is the plateau: about the window's worth of rows (plus one prune period), reused
  thereafter.

Sizes are the database's pages in use after a WAL checkpoint (``page_count x page_size``: the
file's size; freed pages stay in it and are reused). From the growth rate the script states the
journal of a 24 h run at 100 reactors, with and without the default window.

Run: ``python bench/journal_size.py [--seconds 1800] [--window-s 300] [--prune-every-s 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.service.site import JournalConfig  # noqa: E402
from tests.servers import Mosquitto  # noqa: E402
from tests.service_kit import air_hold, site_file, stack  # noqa: E402
from tests.test_recorder_tail import _published, controller_link  # noqa: E402

RECIPE = air_hold("air hold (journal size)", 100.0)
DAY_S = 86_400
SITE_REACTORS = 100


@dataclass(frozen=True, slots=True)
class Size:
    """The journal after a run, and halfway through it."""

    seconds: int
    bytes: int
    half_bytes: int
    outbox_rows: int
    pruned: int
    wall_s: float

    @property
    def per_reactor_s(self) -> float:
        """Bytes per reactor-second (one reactor here): the growth over the run's second half,
        so the fixed part (schema, the run and its recipe) does not count."""
        return (self.bytes - self.half_bytes) / (self.seconds - self.seconds // 2)


def _size(path: Path) -> tuple[int, int]:
    """Bytes in use (after a WAL checkpoint) and outbox rows."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
        rows = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return int(pages) * int(page), int(rows)


async def _run(tmp: Path, broker_port: int, seconds: int, config: JournalConfig) -> Size:
    path = site_file(tmp, broker=f'host = "127.0.0.1"\nport = {broker_port}')
    started = time.perf_counter()
    async with (
        stack(tmp, RECIPE, site_path=path) as st,
        controller_link(st, journal_config=config) as link,
    ):
        half = 0
        for minute in range(seconds // 60):
            await st.cycles(60)
            await _published(st, link)  # acknowledged: prunable once old enough
            if minute + 1 == seconds // 120:
                half = _size(tmp / "state" / "journal.sqlite")[0]
        pruned = link.pruned
    wall_s = time.perf_counter() - started
    size, rows = _size(tmp / "state" / "journal.sqlite")
    return Size(seconds - seconds % 60, size, half, rows, pruned, wall_s)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=1800, help="run time of each run, s")
    parser.add_argument("--window-s", type=float, default=300.0, help="bounded run's window, s")
    parser.add_argument("--prune-every-s", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto")
        with broker:
            growth = await _run(
                tmp / "growth", broker.port, args.seconds, JournalConfig(replay_window_h=1000.0)
            )
            bounded = await _run(
                tmp / "bounded",
                broker.port,
                args.seconds,
                JournalConfig(
                    replay_window_h=args.window_s / 3600, prune_every_s=args.prune_every_s
                ),
            )
    rate = growth.per_reactor_s
    default_h = JournalConfig().replay_window_h
    kept_s = min(DAY_S, default_h * 3600 + JournalConfig().prune_every_s)
    print(f"run time per run: {args.seconds} s of one reactor (stepped clock)")
    print(
        f"growth (nothing pruned): {growth.bytes / 1e6:.2f} MB, {growth.outbox_rows} outbox rows, "
        f"{rate:.0f} bytes per reactor-second ({growth.wall_s:.1f} s wall)"
    )
    print(
        f"bounded (window {args.window_s:g} s, pruned every {args.prune_every_s:g} s): "
        f"{bounded.bytes / 1e6:.2f} MB, {bounded.outbox_rows} outbox rows kept, "
        f"{bounded.pruned} pruned ({bounded.wall_s:.1f} s wall); expected plateau "
        f"~{rate * (args.window_s + args.prune_every_s) / 1e6:.2f} MB"
    )
    print(
        f"24 h at {SITE_REACTORS} reactors: {rate * DAY_S * SITE_REACTORS / 1e9:.1f} GB unpruned; "
        f"{rate * kept_s * SITE_REACTORS / 1e9:.1f} GB with the default window "
        f"({default_h:g} h)"
    )


if __name__ == "__main__":
    asyncio.run(main())
