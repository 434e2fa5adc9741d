"""The batch record of a service run (journal + audit trail + store), over the real wire protocols:
a door opened mid-hold shows as one excursion on the right harvest; the harvest figures are the
journal's; the PDF prints; a running run is PROVISIONAL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from records.pdf import screenshot
from records.render import render_html
from simulators.twin import DoorOpening, run_twin
from simulators.vessel import load_vessel
from tests.cli import hypoxia
from tests.records_kit import (
    ARTIFACTS,
    DOOR_RECIPE,
    DoorRun,
    door_run,
    ink_fraction,
    load_sqlite,
    record_of,
)
from tests.service_kit import stack

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None or shutil.which("pdftoppm") is None,
    reason="needs chromium and poppler-utils (scripts/test installs them)",
)


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> DoorRun:
    """DOOR_RECIPE run to completion; the recorder's points written into the SQLite store."""
    run = asyncio.run(door_run(tmp_path_factory.mktemp("door")))
    asyncio.run(load_sqlite(run))
    return run


def _journal_due(door: DoorRun) -> dict[str, dict[str, object]]:
    from records.state import ReadOnlyJournal

    journal = ReadOnlyJournal.open_ro(door.site.parent / "state" / "journal.sqlite")
    try:
        return {str(e["name"]): e for e in journal.events(door.run_id, "harvest_due")}
    finally:
        journal.close()


def test_the_door_excursion_is_on_the_right_harvest_only(door: DoorRun) -> None:
    rec = record_of(door.site, door.run_id)
    a, b = rec.harvests
    assert (a.name, b.name) == ("CM-A", "CM-B")
    assert a.excursions == []  # the door opened after CM-A was released
    (exc,) = b.excursions
    assert door.door_open_s <= exc.start_s <= door.door_open_s + 15.0  # transport delay
    assert exc.end_s > door.door_close_s
    assert exc.peak_pct is not None
    assert exc.peak_pct > 5.0 + 0.3 + 5.0  # room air flooded in: far above the band
    assert any(c.startswith("door (note by olga") for c in exc.causes)
    assert rec.open_excursions == []
    assert rec.notes == []  # telemetry and journal agree on every excursion count


def test_harvest_figures_are_the_journals(door: DoorRun) -> None:
    rec = record_of(door.site, door.run_id)
    due = _journal_due(door)
    for h in rec.harvests:
        j = due[h.name]
        assert (h.exposure_s, h.o2_mean_pct, h.dose_error_pct_h) == (
            j["exposure_s"],
            j["o2_mean_pct"],
            j["dose_error_pct_h"],
        )
        assert (h.at_s, h.opened_s, h.in_band_frac) == (j["at_s"], j["opened_s"], j["in_band_frac"])
        assert h.excursions_journal == j["excursions"] == len(h.excursions)
        assert sum(e.duration_s for e in h.excursions) == pytest.approx(j["excursion_s"])
    assert rec.harvests[0].confirmation.container == "T75-0101"
    assert rec.harvests[1].confirmation.by == "olga"
    assert rec.harvests[1].confirmation.audit_seq is not None


def test_audit_alarms_and_gas_are_in_the_record(door: DoorRun) -> None:
    rec = record_of(door.site, door.run_id)
    actions = [(a.user, a.action) for a in rec.audit]
    assert actions[0] == ("system", "run_start")
    assert ("olga", "note") in actions
    assert ("olga", "confirm_harvest") in actions
    assert rec.audit_head is not None
    assert rec.audit_head[0] == len(actions)
    assert rec.audit_check.startswith("chain intact")
    assert "o2_deviation" in {s.alarm for s in rec.alarm_spans}
    assert rec.gas_l["n2"] > 100.0  # two purges of 100 L from air to 5 %
    assert rec.gaps == []
    assert rec.missing_seq == []
    assert rec.telemetry_points == sum(1 for k, _ in door.messages if k == "telemetry")
    html = render_html(rec)
    assert "PROVISIONAL" not in html
    assert "http://" not in html.split("<body>", 1)[1]  # nothing to fetch: all inline
    assert html.count("data:image/svg+xml;base64,") == 3  # the run and the two harvests


def test_the_twin_of_the_same_scenario_agrees(door: DoorRun) -> None:
    """Where practical: the twin, with the door at the same run time, gives the same harvests."""
    import tomllib

    from controller.core.recipe import Recipe
    from records.twin import twin_record
    from simulators.summary import summarize

    recipe = Recipe.model_validate(tomllib.loads(DOOR_RECIPE))
    result = run_twin(
        recipe, load_vessel("workstation-100l"), seed=1, doors=[DoorOpening(door.door_open_s, 30)]
    )
    summary = summarize(result)
    twin = twin_record(result, summary, "twin", DOOR_RECIPE, "-")
    service = record_of(door.site, door.run_id)
    for t, s, h in zip(twin.harvests, service.harvests, summary["harvests"], strict=True):
        assert (t.exposure_s, t.o2_mean_pct, t.dose_error_pct_h) == (
            h["exposure_s"],
            h["o2_mean_pct"],
            h["dose_error_pct_h"],
        )
        assert t.exposure_s == s.exposure_s  # harvests fall due at the same exposure
        assert len(t.excursions) == len(s.excursions) == h["excursions"]
        assert t.o2_mean_pct == pytest.approx(s.o2_mean_pct, abs=0.3)
    (t_exc,), (s_exc,) = twin.harvests[1].excursions, service.harvests[1].excursions
    assert t_exc.duration_s == pytest.approx(s_exc.duration_s, rel=0.2)
    assert t_exc.causes[0].startswith("door (simulated")


@needs_chromium
def test_pdf_prints_the_harvest_table(door: DoorRun, tmp_path: Path) -> None:
    result = hypoxia("report", door.run_id, "--site", str(door.site), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "CM-B: exposure 0.15 h" in result.stdout
    pdf, html = tmp_path / "record.pdf", tmp_path / "record.html"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "70", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
    )
    page1 = next(tmp_path.glob("page-*1.png"))
    assert ink_fraction(page1) > 0.02  # text, tables: not a blank page
    shutil.copy(page1, ARTIFACTS / "service-record-pdf-page1.png")
    text = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "1. Harvests" in text
    assert "CM-B" in text
    assert "9 min 00 s" in text  # CM-B's exposure at release
    pages = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    assert "A4" in pages.stdout
    shot = screenshot(html, ARTIFACTS / "service-record.png", height_px=2600)
    assert ink_fraction(shot) > 0.02


def test_one_harvest_record(door: DoorRun, tmp_path: Path) -> None:
    rec = record_of(door.site, door.run_id, harvest="CM-B")
    assert [h.name for h in rec.shown_harvests] == ["CM-B"]
    html = render_html(rec)
    assert "Harvest CM-B" in html
    assert "Harvest CM-A" not in html


def test_bad_input_is_one_line_and_status_2(door: DoorRun, tmp_path: Path) -> None:
    cases = [
        (("report", "nope", "--site", str(door.site)), "unknown run 'nope'"),
        (("report", door.run_id, "--site", str(door.site), "--harvest", "X"), "no harvest 'X'"),
        (("export", door.run_id, "--site", str(tmp_path / "none.toml")), "file not found"),
        (("runs", str(door.site), "--reactor", "ws9"), "unknown reactor 'ws9'"),
    ]
    for args, message in cases:
        result = hypoxia(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    site = tmp_path / "site.toml"
    site.write_text(door.site.read_text().replace(str(door.site.parent / "state"), str(tmp_path)))
    result = hypoxia("report", door.run_id, "--site", str(site))
    assert result.returncode == 2
    assert "no run journal at" in result.stderr


async def test_a_running_run_is_provisional(tmp_path: Path) -> None:
    from tests.records_kit import load_sqlite as load

    async with stack(tmp_path, DOOR_RECIPE) as st:
        await st.cycles(700)  # CM-A released (~580 s), CM-B not yet
        run = st.runner.run
        assert run is not None
        outbox = st.service.journal.replay("ws1", 1, 10**9)
        messages = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload)) for m in outbox]
        await load(DoorRun(tmp_path / "site.toml", run.run_id, -1, -1, messages))
        rec = record_of(tmp_path / "site.toml", run.run_id)
    assert rec.provisional
    assert [h.released for h in rec.harvests] == [True, False]
    assert rec.phases[0].outcome == "running"
    html = render_html(rec)
    assert "PROVISIONAL" in html
    assert "not yet due" in html
