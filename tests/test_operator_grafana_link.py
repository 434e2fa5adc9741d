"""The operator page's link to the reactor's Grafana dashboard (``[page] grafana_url``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.async_api import async_playwright
from pydantic import ValidationError

from controller.service.page_config import PageConfig
from controller.service.site import load_site
from operator_web.web import GRAFANA_RUN_DASHBOARD, grafana_run_url
from tests.page_kit import CHROMIUM, CHROMIUM_ARGS, login, page_site, page_stack
from tests.service_kit import ROOT

GRAFANA = "https://grafana.lab.example:3000/"


def test_the_link_names_the_reactor_run_dashboard_site_and_reactor(tmp_path: Path) -> None:
    """With ``grafana_url`` the reactor-run dashboard's address; without it no link."""
    boards = [json.loads(p.read_text())["uid"] for p in (ROOT / "dashboards").rglob("*.json")]
    assert GRAFANA_RUN_DASHBOARD in boards
    site = load_site(page_site(tmp_path, grafana_url=GRAFANA))
    assert grafana_run_url(site, "ws1") == (
        "https://grafana.lab.example:3000/d/hypoxia-reactor-run?var-site=sim&var-reactor=ws1"
    )
    assert grafana_run_url(load_site(page_site(tmp_path / "none")), "ws1") is None


@pytest.mark.parametrize("url", ["grafana.lab:3000", "ftp://grafana.lab", "http://g/?x=1"])
def test_a_grafana_url_that_is_no_base_address_is_refused(url: str) -> None:
    """Only an http(s) base address: the page appends the dashboard path and variables."""
    with pytest.raises(ValidationError):
        PageConfig(grafana_url=url)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing")
async def test_the_reactor_view_links_to_the_runs_dashboard(tmp_path: Path) -> None:
    """In the browser: the reactor view shows the link, with the run it shows."""
    async with (
        page_stack(tmp_path, grafana_url=GRAFANA) as ps,
        async_playwright() as p,
    ):
        await ps.st.cycles(2)
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await login(page, ps.url, "olga")
            await page.goto(f"{ps.url}/reactor/ws1")
            link = page.locator("#grafana")
            await link.wait_for(state="visible")
            run = ps.st.service.runners["ws1"].run
            assert run is not None
            run_id = run.run_id
            assert run_id
            assert await link.get_attribute("href") == (
                f"{GRAFANA}d/hypoxia-reactor-run?var-site=sim&var-reactor=ws1&var-run_id={run_id}"
            )
            assert await link.get_attribute("rel") == "noopener"
        finally:
            await browser.close()
