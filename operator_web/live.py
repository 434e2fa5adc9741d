"""Live state for the page: one listener on every reactor's cycle, read by the page's requests.

Each committed cycle (:attr:`ReactorRunner.listeners`) the hub takes the reactor's overview
(:mod:`controller.service.overview`), appends a history row, integrates the gas used, keeps the
run log readable and wakes the page's event streams. Requests and streams read what the hub
keeps; they never touch a runner, and never the store.

When the service resumes a run, the history, log and gas used of that run are read back from the
run journal in a worker thread, so a long run does not delay the first cycles. The outbox holds the
telemetry of the replay window only (``[journal] replay_window_h``; older messages are pruned), so
the chart reaches back that far; the gas used comes from the runner's checkpoint, which holds the
whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.core.recipe_engine import Event
from controller.service.overview import reactor_overview
from controller.service.page_config import CylinderConfig
from controller.service.runner import ReactorRunner
from controller.service.supply import gas_forecast
from operator_web.history import (
    COLUMNS,
    HISTORY_S,
    SeriesBuffer,
    row_from_overview,
    row_from_telemetry,
)
from operator_web.texts import event_line

log = logging.getLogger(__name__)

LOG_LINES = 300
"""Run-log lines kept per reactor."""
FORECAST_EVERY_S = 5.0
"""The cylinder forecast is recomputed at most this often (wall time), s."""
_FLOWS = (("n2", "n2_lpm"), ("air", "air_lpm"), ("o2", "o2_lpm"), ("co2", "co2_lpm"))


def _epoch(utc: str | None) -> float:
    return datetime.fromisoformat(utc).timestamp() if utc else time.time()


@dataclass(slots=True)
class ReactorLive:
    """What the page knows of one reactor."""

    runner: ReactorRunner
    history: SeriesBuffer
    view: dict[str, Any] = field(default_factory=dict)
    row: dict[str, float | None] = field(default_factory=dict)
    t: float = 0.0
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    used_l: dict[str, float] = field(default_factory=dict)
    version: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    loading: bool = False
    waiting_rows: list[tuple[float, dict[str, float | None]]] = field(default_factory=list)
    forecast: list[dict[str, Any]] = field(default_factory=list)
    forecast_at: float = -1e9


class LiveHub:
    """The page's view of the running service.

    Args:
        runners: The service's reactor runners, by id.
        cylinders: Gas supplies for the forecast (``[[page.cylinders]]``).
        journal_path: The run journal, to read back a resumed run's history (``None``: don't).
    """

    def __init__(
        self,
        runners: dict[str, ReactorRunner],
        cylinders: list[CylinderConfig] | None = None,
        journal_path: Path | None = None,
    ) -> None:
        self.reactors = {
            rid: ReactorLive(r, SeriesBuffer.for_period(r.period_s)) for rid, r in runners.items()
        }
        self.cylinders = cylinders or []
        self.journal_path = journal_path
        self.fleet_changed = asyncio.Event()
        self.fleet_version = 0
        self.closing = False
        self._loaders: list[asyncio.Task[None]] = []

    # --------------------------------------------------------------------------- lifecycle
    def attach(self) -> None:
        """Listen to every runner's cycles; read resumed runs' history back in the background."""
        for rid, live in self.reactors.items():
            live.runner.listeners.append(self.on_cycle)
            self._refresh(live)
            run = live.runner.run
            if self.journal_path is not None and run is not None and self.journal_path.exists():
                live.loading = True
                task = asyncio.create_task(self._load(rid, run.run_id), name=f"page-load-{rid}")
                self._loaders.append(task)

    def detach(self) -> None:
        """Stop listening and end every event stream."""
        self.closing = True
        for live in self.reactors.values():
            with contextlib.suppress(ValueError):
                live.runner.listeners.remove(self.on_cycle)
            live.changed.set()
        self.fleet_changed.set()
        for task in self._loaders:
            task.cancel()

    # --------------------------------------------------------------------------- per cycle
    def on_cycle(self, runner: ReactorRunner, events: list[Event]) -> None:
        """The runner's listener: take this cycle's state, history row and log lines."""
        live = self.reactors.get(runner.config.id)
        if live is None:
            return
        self._refresh(live)
        for gas, key in _FLOWS:
            lpm = live.row.get(key)
            if lpm is not None:
                live.used_l[gas] = live.used_l.get(gas, 0.0) + lpm * runner.period_s / 60.0
        if live.loading:
            live.waiting_rows.append((live.t, live.row))
        else:
            live.history.append(live.t, live.row)
        for ev in events:
            self._log(live, live.view.get("utc"), ev.t_s, ev.kind, ev.detail)
        self._wake(live)

    def _refresh(self, live: ReactorLive) -> None:
        live.view = reactor_overview(live.runner)
        live.row = row_from_overview(live.view)
        live.t = _epoch(live.view.get("utc"))

    @staticmethod
    def _log(
        live: ReactorLive, utc: str | None, t_s: float, kind: str, detail: dict[str, Any]
    ) -> None:
        text = event_line(kind, detail)
        if text is not None:
            live.log.append({"utc": utc, "t_s": t_s, "kind": kind, "text": text})

    def _wake(self, live: ReactorLive) -> None:
        live.version += 1
        live.changed.set()
        live.changed = asyncio.Event()
        self.fleet_version += 1
        self.fleet_changed.set()
        self.fleet_changed = asyncio.Event()

    # --------------------------------------------------------------------------- reading back
    async def _load(self, rid: str, run_id: str) -> None:
        live = self.reactors[rid]
        assert self.journal_path is not None  # noqa: S101 - checked in attach
        try:
            t, data, used, lines = await asyncio.to_thread(
                _read_journal, self.journal_path, rid, run_id, live.runner.period_s
            )
        except (sqlite3.Error, ValueError, KeyError):
            log.exception("page: could not read the history of %s back", rid)
            t, data, used, lines = np.empty(0), np.empty((len(COLUMNS), 0)), {}, []
        cut = live.waiting_rows[0][0] if live.waiting_rows else np.inf
        keep = t < cut
        live.history.load(t[keep], data[:, keep])
        for ts, row in live.waiting_rows:
            live.history.append(ts, row)
        live.waiting_rows.clear()
        for gas, litres in used.items():
            live.used_l[gas] = live.used_l.get(gas, 0.0) + litres
        # the outbox keeps only the replay window ([journal] replay_window_h); the runner's
        # checkpoint keeps the whole run's gas, so a long run's total survives the pruning
        for gas, litres in live.runner.gas_used_l.items():
            live.used_l[gas] = max(live.used_l.get(gas, 0.0), litres)
        old = list(live.log)
        live.log.clear()
        for utc, t_s, kind, detail in lines:
            self._log(live, utc, t_s, kind, detail)
        live.log.extend(x for x in old if not lines or x["t_s"] > lines[-1][1])
        live.loading = False
        self._wake(live)

    # --------------------------------------------------------------------------- for requests
    async def wait(self, rid: str | None, version: int, timeout_s: float) -> int:
        """Wait until the reactor (``None``: any reactor) has a version newer than ``version``."""
        if rid is None:
            current, event = self.fleet_version, self.fleet_changed
        else:
            live = self.reactors[rid]
            current, event = live.version, live.changed
        if current == version and not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=timeout_s)
        return self.fleet_version if rid is None else self.reactors[rid].version

    def tile(self, rid: str) -> dict[str, Any]:
        """One fleet tile: state, phase, values against set point, alarms, next harvest."""
        view = self.reactors[rid].view
        keys = ("reactor", "name", "run_id", "recipe", "finished", "t_s", "utc", "time_scale")
        tile = {k: view.get(k) for k in keys}
        tile.update(
            phase=view["phase"],
            values=view["values"],
            alarms=view["alarms"],
            next_harvest=view["next_harvest"],
        )
        return tile

    def fleet(self) -> list[dict[str, Any]]:
        """Every reactor's tile."""
        return [self.tile(rid) for rid in self.reactors]

    def detail(self, rid: str) -> dict[str, Any]:
        """One reactor's overview, run log and gas forecast."""
        live = self.reactors[rid]
        now = time.monotonic()
        if now - live.forecast_at >= FORECAST_EVERY_S:
            live.forecast_at = now
            try:
                live.forecast = gas_forecast(live.runner, dict(live.used_l), self.cylinders)
            except (ValueError, ZeroDivisionError, OverflowError):
                log.exception("page: gas forecast of %s failed", rid)
                live.forecast = []
        return {**live.view, "log": list(live.log)[-100:], "gas": live.forecast}

    def point(self, rid: str) -> dict[str, Any]:
        """The newest history row, for a live chart update."""
        live = self.reactors[rid]
        return {"t": live.t, **live.row}


def _read_journal(
    path: Path, rid: str, run_id: str, period_s: float
) -> tuple[Any, Any, dict[str, float], list[tuple[str, float, str, dict[str, Any]]]]:
    """History rows, gas used and log events of a run, from the journal (worker thread)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT payload FROM outbox WHERE reactor = ? AND topic LIKE '%/telemetry' "
            "AND json_extract(payload, '$.run_id') = ? ORDER BY seq",
            (rid, run_id),
        ).fetchall()
        events = conn.execute(
            "SELECT utc, run_t_s, kind, detail FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    messages = [json.loads(r[0]) for r in rows]
    used = {gas: 0.0 for gas, _ in _FLOWS}
    for msg in messages:
        for gas, key in _FLOWS:
            used[gas] += float(msg.get(key) or 0.0) * period_s / 60.0
    newest = messages[-1]["ts_ms"] / 1000.0 if messages else 0.0
    recent = [m for m in messages if m["ts_ms"] / 1000.0 > newest - HISTORY_S]
    t = np.array([m["ts_ms"] / 1000.0 for m in recent], dtype=np.float64)
    data = np.full((len(COLUMNS), len(recent)), np.nan, dtype=np.float32)
    for j, msg in enumerate(recent):
        row = row_from_telemetry(msg)
        for k, name in enumerate(COLUMNS):
            value = row.get(name)
            if value is not None:
                data[k, j] = value
    lines = [(e[0], float(e[1]), str(e[2]), json.loads(e[3])) for e in events[-LOG_LINES:]]
    return t, data, used, lines
