"""The operator page in headless Chromium (Debian's chromium driven by Playwright): logins and
roles, live values, a harvest falling due and confirmed, alarms provoked through the instrument
simulators' fault injection acknowledged and shelved, set points changed by an engineer and refused
to an operator (also when the request is crafted by hand). Screenshots go to
test-artifacts/operator/."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.page_kit import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PageStack, login, page_stack

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def _page(browser: Browser, ps: PageStack, user: str) -> Page:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 1000}, locale="en-GB", timezone_id="UTC"
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await login(page, ps.url, user)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def _text(page: Page, selector: str) -> str:
    return (await page.locator(selector).first.inner_text()).strip()


async def _wait_text_change(ps: PageStack, page: Page, selector: str, cycles: int = 30) -> None:
    before = await _text(page, selector)
    for _ in range(cycles):
        await ps.st.cycles(1)
        await page.wait_for_timeout(150)
        if await _text(page, selector) != before:
            return
    pytest.fail(f"{selector} stayed '{before}' for {cycles} cycles")


async def _crafted(page: Page, ps: PageStack, body: dict[str, Any]) -> dict[str, Any]:
    """A request made by hand with the page's own session cookie and CSRF token."""
    session = await (await page.request.get(f"{ps.url}/api/session")).json()
    reply = await page.request.post(
        f"{ps.url}/api/reactor/ws1/command",
        data=json.dumps(body),
        headers={"content-type": "application/json", "x-csrf-token": session["csrf"]},
    )
    result: dict[str, Any] = await reply.json()
    return result


async def _until(ps: PageStack, done: Any, limit: int, step: int = 10) -> None:
    for _ in range(0, limit, step):
        if done():
            return
        await ps.st.cycles(step)
    assert done(), f"not reached within {limit} cycles"


async def test_operator_and_engineer_work_a_run(tmp_path: Path, browser: Browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with page_stack(tmp_path) as ps:
        st = ps.st
        await st.cycles(60)
        olga = await _page(browser, ps, "olga")
        assert await olga.locator(".tile").count() == 1
        await _wait_text_change(ps, olga, ".tile [data-var=o2]")  # live over the event stream

        await olga.click(".tile")
        await olga.wait_for_selector("body[data-painted='1']")
        assert await olga.locator("#sp-form").count() == 0  # not offered to an operator
        assert await olga.locator("#note-form").count() == 1
        await _wait_text_change(ps, olga, "#values [data-var=o2]")

        # an operator cannot change a set point, even by a crafted request
        run_id = st.runner.run.run_id  # type: ignore[union-attr]
        crafted = {
            "verb": "set_setpoint",
            "run_id": run_id,
            "variable": "o2_pct",
            "value": 3.0,
            "reason": "crafted",
        }
        reply = await _crafted(olga, ps, crafted)
        assert not reply["ok"]
        assert "role 'operator' may not set_setpoint" in reply["message"]
        reply = await _crafted(olga, ps, {**crafted, "user": "erik"})
        assert not reply["ok"]
        assert "differs" in reply["message"]
        no_csrf = await olga.request.post(
            f"{ps.url}/api/reactor/ws1/command",
            data=json.dumps(crafted),
            headers={"content-type": "application/json"},
        )
        assert no_csrf.status == 403
        refusals = [r for r in st.service.audit.records() if r.outcome.startswith("refused")]
        assert [r.user for r in refusals][-2:] == ["olga", "olga"]

        # the first harvest's countdown reaches due; the due notice appears; olga confirms it
        countdown = await _text(olga, ".harv[data-name='CM-10min'] [data-role=text]")
        assert " of 10 min 00 s in band, due about " in countdown
        await _until(ps, lambda: "CM-10min" in st.runner.engine.pending, 1800)  # type: ignore[union-attr]
        await olga.wait_for_selector(".due-notice[data-harvest='CM-10min']")
        await olga.screenshot(path=str(ARTIFACTS / "reactor-harvest-due.png"), full_page=True)
        fleet = await _page(browser, ps, "erik")
        await fleet.wait_for_selector(".tile .harvest.due")
        await fleet.screenshot(path=str(ARTIFACTS / "fleet.png"), full_page=True)
        form = olga.locator("form[data-harvest='CM-10min']")
        await form.locator("input[name=container]").fill("T75-0042")
        await form.locator("input[name=volume_ml]").fill("12.5")
        await form.locator("button[type=submit]").click()
        await olga.wait_for_selector("#toast:has-text('accepted: confirm_harvest')")
        await st.cycles(2)
        await olga.wait_for_selector(".harv.done[data-name='CM-10min']")
        done = st.journal_events("harvest_done")
        assert (done[0]["harvest"], done[0]["by"], done[0]["container"]) == (
            "CM-10min",
            "olga",
            "T75-0042",
        )

        # an alarm provoked on the wire: acknowledged, then shelved, by the operator
        st.sim.sim("o2-luminox").faults.no_reply = True
        await st.cycles(3)
        assert st.alarm("o2_sensor") == "active_unacknowledged"
        row = "tr[data-alarm='o2_sensor']"
        await olga.wait_for_selector(f"{row}:has-text('ACTIVE · unacknowledged')")
        await olga.screenshot(path=str(ARTIFACTS / "reactor-alarm.png"), full_page=True)
        await olga.click("button[data-ack='o2_sensor']")
        await olga.wait_for_selector("#toast:has-text('accepted: acknowledge')")
        await st.cycles(2)
        assert st.alarm("o2_sensor") == "active_acknowledged"
        await olga.wait_for_selector(f"{row}:has-text('active · acknowledged')")
        shelve = olga.locator("form[data-shelve='o2_sensor']")
        await shelve.locator("input[name=minutes]").fill("30")
        await shelve.locator("input[name=reason]").fill("probe being replaced")
        await shelve.locator("button[type=submit]").click()
        await olga.wait_for_selector("#toast:has-text('accepted: shelve')")
        await st.cycles(2)
        assert st.alarm("o2_sensor") == "shelved"
        await olga.wait_for_selector(f"{row}:has-text('shelved')")
        st.sim.sim("o2-luminox").faults.clear()

        # the engineer changes a set point with a reason
        erik = fleet
        await erik.click(".tile")
        await erik.wait_for_selector("#sp-form")
        await erik.select_option("#sp-form select[name=variable]", "o2_pct")
        await erik.fill("#sp-form input[name=value]", "2.5")
        await erik.fill("#sp-form input[name=reason]", "protocol v2")
        await erik.click("#sp-form button[type=submit]")
        await erik.wait_for_selector("#toast:has-text('accepted: set_setpoint')")
        await st.cycles(3)
        assert st.runner.phase is not None
        assert st.runner.phase.o2_pct == 2.5
        changed = st.journal_events("setpoint_changed")[-1]
        assert (changed["user"], changed["reason"], changed["new"]) == ("erik", "protocol v2", 2.5)
        await erik.wait_for_selector("#values:has-text('set point 2.50 ± 0.20 %')")
        await st.cycles(30)
        await erik.evaluate("document.getElementById('toast').style.display = 'none'")
        await erik.screenshot(path=str(ARTIFACTS / "reactor.png"), full_page=True)
        assert st.service.audit.verify().ok
        for page in (olga, erik):
            assert page.errors == []  # type: ignore[attr-defined]


async def test_pages_need_a_login_and_the_wrong_password_fails(
    tmp_path: Path, browser: Browser
) -> None:
    async with page_stack(tmp_path) as ps:
        await ps.st.cycles(2)
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{ps.url}/reactor/ws1")
        assert page.url.endswith("/login")
        assert (await page.request.get(f"{ps.url}/api/fleet")).status == 401
        await page.fill("#user", "olga")
        await page.fill("#password", "not her password")
        await page.click("button[type=submit]")
        await page.wait_for_selector("#msg:has-text('unknown user or wrong password')")
        cross = await page.request.post(
            f"{ps.url}/api/login",
            data=json.dumps({"user": "olga", "password": "olga-pw-1"}),
            headers={"content-type": "application/json", "origin": "http://evil.example"},
        )
        assert cross.status == 403
        await login(page, ps.url, "vera")  # a viewer sees, and is offered nothing
        await page.click(".tile")
        await page.wait_for_selector("#actions:has-text('may only view')")


async def test_a_dragged_window_is_fetched_again_at_full_resolution(
    tmp_path: Path, browser: Browser
) -> None:
    async with page_stack(tmp_path) as ps:
        await ps.st.cycles(2600)  # more rows than the 2000 points the whole view is drawn with
        page = await _page(browser, ps, "erik")
        windows: list[str] = []
        page.on("request", lambda r: windows.append(r.url) if "until=" in r.url else None)
        await page.click(".tile")
        await page.wait_for_selector("body[data-painted='1']")
        history = ps.ops.hub.reactors["ws1"].history
        assert len(history.window(None, None, 20_000)["t"]) >= 2600
        whole = await _text(page, "#points")
        assert whole.endswith(" points drawn")
        assert int(whole.split()[0]) <= 2000  # downsampled (min/max buckets)
        assert await page.locator("#live-btn").is_hidden()

        over = await page.locator(".chart .u-over").first.bounding_box()
        assert over is not None
        y = over["y"] + over["height"] / 2
        await page.mouse.move(over["x"] + over["width"] * 0.40, y)
        await page.mouse.down()
        await page.mouse.move(over["x"] + over["width"] * 0.55, y, steps=8)
        await page.mouse.up()
        await page.wait_for_selector("#points:has-text('zoomed:')")
        assert len(windows) == 1  # four synced charts, one request
        query = dict(p.split("=") for p in windows[0].split("?", 1)[1].split("&"))
        since, until = float(query["since"]), float(query["until"])
        rows = history.window(since, until, 20_000)["t"]
        assert 300 < len(rows) < 2000  # a window the whole view had thinned out
        zoomed = await _text(page, "#points")
        assert f", {len(rows)} points drawn" in zoomed  # every row of the window, none thinned
        assert await page.locator("#live-btn").is_visible()
        await page.screenshot(path=str(ARTIFACTS / "reactor-zoomed.png"), full_page=True)

        await ps.st.cycles(5)  # live rows arrive meanwhile: the zoomed window stays as fetched
        await page.wait_for_timeout(500)
        assert await _text(page, "#points") == zoomed
        await page.click("#live-btn")
        await page.wait_for_selector("#points:not(:has-text('zoomed'))")
        assert await page.locator("#live-btn").is_hidden()
        await _wait_text_change(ps, page, "#points")  # live again
        assert page.errors == []  # type: ignore[attr-defined]
