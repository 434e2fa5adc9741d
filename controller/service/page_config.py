"""Site-file sections of the operator page and its notifications (docs/operator.md).

``[page]`` says where ``hypoxia run`` serves the operator page and what it shows of the gas
supplies; ``[notifications]`` lists where apprise sends harvest and alarm notices. Both are plain
configuration: the page itself (package ``operator_web``) is started by the CLI, never imported by
runtime code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CylinderConfig(_Strict):
    """A gas supply of one reactor, for the cylinder run-out forecast.

    Attributes:
        reactor: The reactor it feeds.
        gas: ``n2``, ``air``, ``o2`` or ``co2``.
        capacity_l: Full content, litres at STP.
        content_l: Content when the run started, litres at STP (default: full).
    """

    reactor: str = Field(min_length=1, max_length=32)
    gas: Literal["n2", "air", "o2", "co2"]
    capacity_l: float = Field(gt=0, le=1e7)
    content_l: float | None = Field(default=None, ge=0, le=1e7)


class PageConfig(_Strict):
    """``[page]``: the operator page served by ``hypoxia run``.

    Attributes:
        enabled: Serve the page.
        host: Address to listen on (loopback by default; put a TLS proxy in front to publish it).
        port: TCP port (0: any free port).
        public_url: The page's address as operators reach it (links in notifications); default
            ``http://host:port``.
        secret_file: Key that signs session cookies (generated on first start, mode 0600);
            default ``state_dir/page-secret``.
        session_max_age_h: A login lasts this long, h.
        cylinders: Gas supplies per reactor for the run-out forecast.
        grafana_url: Grafana's base address (e.g. ``https://grafana.lab:3000``) with the provisioned
            dashboards (docs/dashboards.md): the reactor view then links to the run's
            "Hypoxia: reactor run" dashboard. Default: no link.
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    secret_file: Path | None = None
    session_max_age_h: float = Field(default=12.0, gt=0, le=24 * 30)
    cylinders: list[CylinderConfig] = Field(default_factory=list)
    grafana_url: str | None = Field(default=None, pattern=r"^https?://[^\s?#]+$")


class NotificationsConfig(_Strict):
    """``[notifications]``: where harvest and alarm notices go (apprise URLs).

    Attributes:
        urls: apprise URLs (``mailto://…``, ``json://host/path``, ``ntfy://…`` …); empty: none sent.
        remind_after_min: A notice whose cause still stands is repeated after this long, min.
    """

    urls: list[str] = Field(default_factory=list, max_length=50)
    remind_after_min: float = Field(default=30.0, gt=0, le=7 * 24 * 60)
