"""Runs for the batch-record tests: the real service over the wire against the instrument
simulators on a stepped clock (tests.service_kit), with a door opened mid-hold, operators acting
through the command processor, and the recorder's own points written into its store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.points import Point, message_points
from recorder.stores import InfluxV1, Sqlite, Store
from telemetry.config import InfluxDB1Store, SqliteStore
from tests.service_kit import Stack, stack

DOOR_RECIPE = """name = "5 % hold, two harvests by exposure"
description = "record test: a door is opened between the harvests"

[[phases]]
name = "hypoxic hold"
o2_pct = 5.0
o2_band_pct = 0.3
co2_pct = 5.0
co2_band_pct = 1.0
until = "exposure"
duration_h = 0.16
max_duration_h = 2.0

  [[phases.harvests]]
  name = "CM-A"
  at_exposure_h = 0.05
  action = "confirm"

  [[phases.harvests]]
  name = "CM-B"
  at_exposure_h = 0.15
  action = "confirm"

[[phases]]
name = "release"
co2_pct = 5.0
co2_band_pct = 1.0
until = "time"
duration_h = 0.01
"""
DOOR_AFTER_HARVEST_S = 60
"""Cycles between the release of CM-A and the door opening."""
DOOR_S = 30
"""Cycles the door stays open."""
CONTAINERS = {"CM-A": ("T75-0101", 11.0), "CM-B": ("T75-0102", 12.5)}


@dataclass(frozen=True)
class DoorRun:
    """A finished run of DOOR_RECIPE: where its site lives and what happened, by run time."""

    site: Path
    run_id: str
    door_open_s: float
    door_close_s: float
    messages: list[tuple[str, dict[str, Any]]]

    def points(self) -> list[Point]:
        """The recorder's points for every message the run published."""
        return [p for kind, m in self.messages for p in message_points(kind, m)]


def command(st: Stack, verb: str, user: str, **fields: Any) -> dict[str, Any]:
    """Send a command through the service's command processor (as ``hypoxia ctl`` does)."""
    processor = st.service.processor
    run = st.runner.run
    assert processor is not None
    assert run is not None
    body = {"verb": verb, "reactor": "ws1", "run_id": run.run_id, "user": user, **fields}
    reply = processor.handle(body).as_dict()
    assert reply["ok"], reply
    return reply


def _confirm_due(st: Stack, confirmed: set[str]) -> None:
    for due in st.journal_events("harvest_due"):
        name = str(due["name"])
        if name not in confirmed:
            container, volume = CONTAINERS[name]
            command(
                st, "confirm_harvest", "olga", harvest=name, volume_ml=volume, container=container
            )
            confirmed.add(name)


def acknowledged_needed(st: Stack) -> list[str]:
    """Alarms active and not yet acknowledged."""
    return [
        n for n, a in st.runner.alarms.alarms.items() if a.state.value == "active_unacknowledged"
    ]


async def door_run(tmp: Path, max_cycles: int = 4000) -> DoorRun:
    """Run DOOR_RECIPE to completion with a door opened between its harvests."""
    async with stack(tmp, DOOR_RECIPE) as st:
        confirmed: set[str] = set()
        door_open = door_close = -1.0
        status, run_id = "active", ""
        for _ in range(max_cycles):
            await st.cycles(1)
            t = st.runner.run_t_s()
            _confirm_due(st, confirmed)
            if "o2_deviation" in acknowledged_needed(st):
                command(st, "acknowledge", "erik", alarm="o2_deviation")
            if "CM-A" in confirmed and door_open < 0:
                due_a = st.journal_events("harvest_due")[0]["t_s"]
                if t >= due_a + DOOR_AFTER_HARVEST_S:
                    st.link.door_open = True
                    door_open = t
                    command(st, "note", "olga", text="incubator door opened to add medium")
            if door_open >= 0 > door_close and t >= door_open + DOOR_S:
                st.link.door_open = False
                door_close = t
            run = st.runner.run
            assert run is not None
            record = st.service.journal.run(run.run_id)
            assert record is not None
            status, run_id = record.status, run.run_id
            if status != "active":
                break
        assert status == "complete", status
        outbox = st.service.journal.replay("ws1", 1, 10**9)
        messages = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload)) for m in outbox]
        return DoorRun(tmp / "site.toml", run_id, door_open, door_close, messages)


async def write_store(store: Store, points: list[Point]) -> None:
    """Write points through the recorder's store class, in the recorder's batch size."""
    await store.open()
    try:
        for i in range(0, len(points), 500):
            await store.write(points[i : i + 500])
    finally:
        await store.close()


async def load_sqlite(run: DoorRun) -> None:
    """Write the run's points into the site's embedded SQLite store (state_dir/telemetry.sqlite)."""
    await write_store(Sqlite(SqliteStore(kind="sqlite"), run.site.parent / "state"), run.points())


async def load_influxdb1(url: str, database: str, run: DoorRun) -> None:
    """Write the run's points into InfluxDB 1.x through the recorder's v1 store."""
    store = InfluxV1(InfluxDB1Store(kind="influxdb1", url=url, database=database))
    await write_store(store, run.points())


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "records"
"""Screenshots and rendered pages the record tests leave for people to look at (gitignored)."""


def record_of(site: Path, run_id: str, harvest: str | None = None) -> Any:
    """Gather a run's record from the site's journal, audit trail and store."""
    from controller.service.site import load_site
    from records.gather import gather
    from records.make import opened

    loaded = load_site(site)
    with opened(loaded) as o:
        return gather(o.state, o.reader, run_id, harvest)


def ink_fraction(png: Path) -> float:
    """Share of pixels that are not (near) white."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as img:
        grey = np.asarray(img.convert("L"))
    return float((grey < 230).mean())
