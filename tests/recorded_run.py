"""A recorded run for store and dashboard tests: the short-demo recipe run to completion by the real
control service (tests.service_kit.stack: simulated instruments on their wire protocols, stepped
clock), its MQTT messages exactly as published, and the recorder's points for them."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recorder.points import message_points
from tests.service_kit import ROOT, Stack, stack

SHORT_DEMO = ROOT / "examples/recipes/short-demo.toml"


@dataclass(frozen=True)
class RecordedRun:
    """The MQTT ``telemetry`` and ``event`` messages of one run, in sequence order."""

    messages: list[tuple[str, dict[str, Any]]]
    """(kind, message): kind is the last topic level, ``telemetry`` or ``event``."""
    site: str
    reactor: str
    run_id: str
    status: str
    """The run's final status in the journal (``complete`` for a finished run)."""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """The messages of one kind."""
        return [m for k, m in self.messages if k == kind]

    def lines(self) -> list[str]:
        """The recorder's line protocol for every message (microsecond timestamps)."""
        return [p.line() for kind, m in self.messages for p in message_points(kind, m)]

    @property
    def start_ms(self) -> int:
        """Source time (UTC ms) of the first message."""
        return min(int(m["ts_ms"]) for _, m in self.messages)

    @property
    def end_ms(self) -> int:
        """Source time (UTC ms) of the last message."""
        return max(int(m["ts_ms"]) for _, m in self.messages)


def _confirm_due_harvests(st: Stack, run_id: str, confirmed: set[str]) -> None:
    """Confirm, as an operator would, every due harvest whose action is ``confirm``."""
    processor = st.service.processor
    assert processor is not None
    for due in st.journal_events("harvest_due"):
        name = str(due["name"])
        if due.get("action") == "confirm" and name not in confirmed:
            body = {
                "verb": "confirm_harvest",
                "reactor": "ws1",
                "run_id": run_id,
                "user": "olga",
                "harvest": name,
                "volume_ml": 12.5,
                "container": "T75-0042",
            }
            reply = processor.handle(body).as_dict()
            if not reply["ok"]:
                msg = f"confirm_harvest refused: {reply}"
                raise RuntimeError(msg)
            confirmed.add(name)


async def record_run(tmp: Path, recipe_body: str, max_cycles: int = 3000) -> RecordedRun:
    """Run a recipe (TOML text) on reactor ws1 until it ends, confirming the harvests that ask
    for it as an operator would; at most ``max_cycles`` control cycles of 1 s."""
    async with stack(tmp, recipe_body) as st:
        confirmed: set[str] = set()
        status = "active"
        run_id = ""
        for _ in range(0, max_cycles, 10):
            await st.cycles(10)
            run = st.runner.run
            assert run is not None
            run_id = run.run_id
            _confirm_due_harvests(st, run_id, confirmed)
            record = st.service.journal.run(run_id)
            assert record is not None
            status = record.status
            if status != "active":
                break
        outbox = st.service.journal.replay("ws1", 1, 10**9)
        site = st.site.site
    messages = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload)) for m in outbox]
    return RecordedRun(messages, site=site, reactor="ws1", run_id=run_id, status=status)


def influxdb1_load(url: str, database: str, run: RecordedRun) -> None:
    """``CREATE DATABASE`` and write the run's points through the v1 ``/write`` API."""
    create = urllib.parse.urlencode({"q": f'CREATE DATABASE "{database}"'})
    _post(f"{url}/query?{create}", b"")
    params = urllib.parse.urlencode({"db": database, "precision": "u"})
    _post(f"{url}/write?{params}", "\n".join(run.lines()).encode())


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
        if resp.status not in (200, 204):
            msg = f"{url}: HTTP {resp.status}"
            raise RuntimeError(msg)
