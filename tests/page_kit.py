"""Test kit for the operator page: the simulated site on a stepped clock, the page served from the
same event loop, site users with passwords, and headless Chromium driven by Playwright."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.passwords import set_password
from controller.service.site import load_site
from operator_web.serve import OperatorServices, operator_services
from tests.service_kit import ROOT, Stack, site_file, stack

PASSWORDS = {"olga": "olga-pw-1", "erik": "erik-pw-1", "vera": "vera-pw-1"}
"""Passwords of the example site's users in these tests."""
ARTIFACTS = ROOT / "test-artifacts" / "operator"
"""Screenshots the tests leave (gitignored); docs/img/ holds the committed ones."""
WARM = "warm"
"""The demo's 100 L workstation, already at 37 degC (hypoxia/demo_files/vessel.toml)."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

RECIPE_2PCT = """name = "Hypoxic preconditioning, 2 % O2, harvests by exposure"
[[phases]]
name = "hypoxic hold"
o2_pct = 2.0
o2_band_pct = 0.2
co2_pct = 5.0
co2_band_pct = 1.0
temp_c = 37.0
temp_band_c = 1.0
until = "exposure"
duration_h = 0.5
max_duration_h = 2.0

  [[phases.harvests]]
  name = "CM-10min"
  at_exposure_h = 0.1666667
  action = "confirm"

  [[phases.harvests]]
  name = "CM-30min"
  at_exposure_h = 0.5
  action = "confirm"

[[phases]]
name = "reoxygenate"
o2_pct = 18.6
o2_band_pct = 0.5
co2_pct = 5.0
temp_c = 37.0
until = "in_spec"
duration_h = 1.0
"""


@dataclass
class PageStack:
    """A running site with its operator page."""

    st: Stack
    ops: OperatorServices

    @property
    def url(self) -> str:
        """The page's address."""
        assert self.ops.url is not None
        return self.ops.url


def page_site(
    tmp: Path,
    *,
    limits: dict[str, float] | None = None,
    notifications: list[str] | None = None,
    remind_after_min: float = 30.0,
    extra: str = "",
    grafana_url: str | None = None,
) -> Path:
    """The example site for page tests: page on a free port, users with passwords."""
    path = site_file(tmp, limits=limits)
    text = path.read_text()
    text += "\n[page]\nport = 0\n"
    if grafana_url is not None:
        text += f'grafana_url = "{grafana_url}"\n'
    if notifications is not None:
        urls = ", ".join(f'"{u}"' for u in notifications)
        text += f"\n[notifications]\nurls = [{urls}]\nremind_after_min = {remind_after_min}\n"
    path.write_text(text + extra)
    site = load_site(path)
    for name, password in PASSWORDS.items():
        set_password(site.users_file, name, password)
    return path


def warm_vessel(tmp: Path) -> str:
    """The demo's workstation (switched on, warm) at the example site's 1 s control period."""
    text = (ROOT / "hypoxia/demo_files/vessel.toml").read_text()
    path = tmp / "warm.toml"
    path.write_text(text.replace("control_period_s = 5.0", "control_period_s = 1.0"))
    return str(path)


@asynccontextmanager
async def page_stack(
    tmp: Path,
    recipe: str = RECIPE_2PCT,
    *,
    limits: dict[str, float] | None = None,
    notifications: list[str] | None = None,
    remind_after_min: float = 30.0,
    vessel: str = WARM,
    grafana_url: str | None = None,
) -> AsyncIterator[PageStack]:
    """Serve the simulated site's instruments, build the service, serve its page."""
    path = page_site(
        tmp,
        limits=limits,
        notifications=notifications,
        remind_after_min=remind_after_min,
        grafana_url=grafana_url,
    )
    if vessel == WARM:
        vessel = warm_vessel(tmp)
    async with (
        stack(tmp, recipe, site_path=path, vessel=vessel) as st,
        operator_services(st.service) as ops,
    ):
        yield PageStack(st, ops)


async def login(page: Any, base: str, user: str) -> None:
    """Log in through the login form and wait for the fleet."""
    await page.goto(f"{base}/login")
    await page.fill("#user", user)
    await page.fill("#password", PASSWORDS[user])
    await page.click("button[type=submit]")
    await page.wait_for_selector(".tile")
