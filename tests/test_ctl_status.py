"""`hypoxia ctl status` for people: values with units against set point and band, phase, harvest
exposure clocks with due times, alarms; `--json` keeps the machine output."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from controller.service.app import status
from hypoxia.status_view import status_view
from tests.page_kit import RECIPE_2PCT, warm_vessel
from tests.service_kit import stack


async def test_status_table_reads_like_the_page(tmp_path: Path) -> None:
    async with stack(tmp_path, RECIPE_2PCT, vessel=warm_vessel(tmp_path)) as st:
        await st.cycles(900)
        st.sim.sim("o2-luminox").faults.no_reply = True
        await st.cycles(2)
        reply: dict[str, Any] = {"ok": True, "verb": "status", "reactors": status(st.service)}
    assert reply["reactors"]["ws1"]["readings"]["o2"]["quality"] == "bad"  # the JSON as before
    buffer = io.StringIO()
    Console(file=buffer, width=140, color_system=None).print(status_view(reply))
    text = buffer.getvalue()
    assert "phase 1/2 'hypoxic hold' running" in text
    assert "5.00 %" in text
    assert "± 1.00" in text
    assert "37.0 °C" in text
    assert "- (bad)" in text  # O2 untrusted
    assert "CM-10min" in text
    assert " of 10 min 00 s in band, due about " in text
    assert "o2_sensor" in text
    assert "ACTIVE, unacknowledged" in text
    assert "20.989999" not in text
