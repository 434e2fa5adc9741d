"""The operator page: a Starlette application over the live hub and the one command processor.

Pages (``/``, ``/reactor/{id}``, ``/login``) are static HTML that script fills from JSON:

========================================  ===================================================
``POST /api/login``, ``/api/logout``      session cookie (see :mod:`operator_web.auth`)
``GET /api/session``                      who is logged in, CSRF token, what the page offers
``GET /api/fleet``                        one tile per reactor
``GET /api/reactor/{id}``                 overview, run log, gas forecast
``GET /api/reactor/{id}/history``         chart rows (``since``, ``until``: epoch s; ``points``)
``GET /api/stream[?reactor=id]``          server-sent events: ``fleet`` or ``reactor`` updates
``POST /api/reactor/{id}/command``        a command, as JSON, to ``CommandProcessor.handle``
========================================  ===================================================

Every command goes through :meth:`CommandProcessor.handle` with ``source="web"`` and the logged-in
user forced: a payload naming another user or reactor is refused and audited like any other.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.service.commands import CommandProcessor
from controller.service.site import SiteConfig
from operator_web.auth import (
    SessionUser,
    check_login,
    csrf_ok,
    current_user,
    new_session,
    same_origin,
)
from operator_web.live import LiveHub
from telemetry.messages import dumps

STATIC = Path(str(resources.files("operator_web") / "static"))
KEEPALIVE_S = 15.0
"""An event stream sends a comment at least this often (proxies close silent streams)."""
MIN_SEND_INTERVAL_S = 0.2
"""A stream sends at most five updates a second (ten reactors at 1 Hz coalesce)."""
MAX_STREAM_POINTS = 2000
"""Chart rows one stream message carries at most (a page that fell behind refetches)."""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)


class JSON(Response):
    """JSON with non-finite numbers as ``null`` (the telemetry contract's strict encoder)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Strict JSON bytes."""
        return dumps(content).encode()


GRAFANA_RUN_DASHBOARD = "hypoxia-reactor-run"
"""uid of the reactor-run dashboard in dashboards/grafana/dashboards/reactor-run.json."""


def grafana_run_url(site: SiteConfig, rid: str) -> str | None:
    """The reactor's "Hypoxia: reactor run" dashboard (``[page] grafana_url``), or None.

    The page appends ``&var-run_id=…`` for the run it shows.
    """
    if not site.page.grafana_url:
        return None
    query = urllib.parse.urlencode({"var-site": site.site, "var-reactor": rid})
    return f"{site.page.grafana_url.rstrip('/')}/d/{GRAFANA_RUN_DASHBOARD}?{query}"


class SecurityHeaders:
    """Adds CSP, no-framing and no-sniffing headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the headers to the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


Handler = Callable[[Request, SessionUser], Awaitable[Response]]


class OperatorPage:
    """The page's routes over one service.

    Args:
        site: The site (users, roles, page settings).
        hub: Live state of the reactors.
        processor: The service's command processor.
    """

    def __init__(self, site: SiteConfig, hub: LiveHub, processor: CommandProcessor) -> None:
        self.site = site
        self.hub = hub
        self.processor = processor

    def app(self, secret: str, https: bool = False) -> Starlette:
        """The ASGI application (signed-cookie sessions with ``secret``)."""
        routes = [
            Route("/", self.page("fleet.html")),
            Route("/reactor/{rid}", self.page("reactor.html")),
            Route("/login", self.login_page),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.authed(self.logout, write=True), methods=["POST"]),
            Route("/api/session", self.authed(self.session)),
            Route("/api/fleet", self.authed(self.fleet)),
            Route("/api/reactor/{rid}", self.authed(self.reactor)),
            Route("/api/reactor/{rid}/history", self.authed(self.history)),
            Route("/api/stream", self.authed(self.stream)),
            Route(
                "/api/reactor/{rid}/command",
                self.authed(self.command, write=True),
                methods=["POST"],
            ),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        middleware = [
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="hypoxia_session",
                max_age=round(self.site.page.session_max_age_h * 3600),
                same_site="strict",
                https_only=https,
            ),
        ]
        return Starlette(routes=routes, middleware=middleware)

    # ------------------------------------------------------------------------------ plumbing
    def authed(
        self, handler: Handler, write: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: logged-in user required; for writes, a valid CSRF token too."""

        async def endpoint(request: Request) -> Response:
            user = current_user(request, self.site)
            if user is None:
                return JSON({"ok": False, "message": "log in first"}, status_code=401)
            if write and not csrf_ok(request, user):
                return JSON({"ok": False, "message": "missing or wrong CSRF token"}, 403)
            rid = request.path_params.get("rid")
            if rid is not None and (rid not in self.hub.reactors or not user.may_view(rid)):
                return JSON({"ok": False, "message": f"no reactor '{rid}' for you"}, 404)
            return await handler(request, user)

        return endpoint

    def page(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        """A static page for logged-in users; others go to the login page."""

        async def endpoint(request: Request) -> Response:
            if current_user(request, self.site) is None:
                return RedirectResponse("/login", status_code=303)
            return FileResponse(STATIC / name, headers={"cache-control": "no-store"})

        return endpoint

    async def login_page(self, request: Request) -> Response:
        """The login form."""
        return FileResponse(STATIC / "login.html", headers={"cache-control": "no-store"})

    # ------------------------------------------------------------------------------ session
    async def login(self, request: Request) -> Response:
        """``{"user", "password"}`` -> a new session."""
        if not same_origin(request):
            return JSON({"ok": False, "message": "cross-site login refused"}, 403)
        try:
            body = await request.json()
            name, password = str(body["user"])[:64], str(body["password"])[:1024]
        except (ValueError, KeyError, TypeError):
            return JSON({"ok": False, "message": "send user and password"}, 400)
        why = await check_login(self.site, name, password)
        if why is not None:
            return JSON({"ok": False, "message": why}, 401)
        new_session(request, name)
        return JSON({"ok": True, "user": name})

    async def logout(self, request: Request, user: SessionUser) -> Response:
        """End the session."""
        request.session.clear()
        return JSON({"ok": True})

    async def session(self, request: Request, user: SessionUser) -> Response:
        """Who is logged in, the CSRF token, and which commands the page offers where."""
        return JSON(
            {
                "user": user.name,
                "role": user.role,
                "csrf": user.csrf,
                "site": self.site.site,
                "verbs": {rid: user.verbs(rid) for rid in self.hub.reactors},
            }
        )

    # ------------------------------------------------------------------------------ reading
    def _visible(self, user: SessionUser) -> list[str]:
        return [rid for rid in self.hub.reactors if user.may_view(rid)]

    async def fleet(self, request: Request, user: SessionUser) -> Response:
        """Tiles of the reactors this user may see."""
        return JSON({"tiles": [self.hub.tile(rid) for rid in self._visible(user)]})

    async def reactor(self, request: Request, user: SessionUser) -> Response:
        """One reactor's overview, log and gas forecast (and its Grafana dashboard's address)."""
        rid = request.path_params["rid"]
        return JSON({**self.hub.detail(rid), "grafana_url": grafana_run_url(self.site, rid)})

    async def history(self, request: Request, user: SessionUser) -> Response:
        """Chart rows of a window, downsampled to ``points``."""
        q = request.query_params
        try:
            since = float(q["since"]) if "since" in q else None
            until = float(q["until"]) if "until" in q else None
            points = min(20_000, max(10, int(q.get("points", "2000"))))
        except ValueError:
            return JSON({"ok": False, "message": "since, until: epoch s; points: int"}, 400)
        live = self.hub.reactors[request.path_params["rid"]]
        rows = live.history.window(since, until, points)
        return JSON(rows)

    async def stream(self, request: Request, user: SessionUser) -> Response:
        """Server-sent events: the fleet, or one reactor with its new chart rows."""
        rid = request.query_params.get("reactor")
        if rid is not None and (rid not in self.hub.reactors or not user.may_view(rid)):
            return JSON({"ok": False, "message": f"no reactor '{rid}' for you"}, 404)
        since = request.query_params.get("since")
        try:
            last_t = float(since) if since else math.inf
        except ValueError:
            last_t = math.inf
        return StreamingResponse(
            self._events(user, rid, last_t),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _events(
        self, user: SessionUser, rid: str | None, last_t: float
    ) -> AsyncIterator[str]:
        version = -1
        while not self.hub.closing:
            newer = await self.hub.wait(rid, version, KEEPALIVE_S)
            if self.hub.closing:
                return
            if newer == version:
                yield ": keepalive\n\n"
                continue
            version = newer
            if rid is None:
                data: dict[str, Any] = {"tiles": [self.hub.tile(r) for r in self._visible(user)]}
                yield f"event: fleet\ndata: {dumps(data)}\n\n"
            else:
                live = self.hub.reactors[rid]
                rows = (
                    live.history.window(last_t, None, MAX_STREAM_POINTS)
                    if math.isfinite(last_t)
                    else {}
                )
                if live.history.last_t is not None:
                    last_t = live.history.last_t
                data = {"view": self.hub.detail(rid), "rows": rows}
                yield f"event: reactor\ndata: {dumps(data)}\n\n"
            await asyncio.sleep(MIN_SEND_INTERVAL_S)  # Starlette cancels us when the client goes

    # ------------------------------------------------------------------------------ commands
    async def command(self, request: Request, user: SessionUser) -> Response:
        """A command through the one processor, as the logged-in user."""
        rid = request.path_params["rid"]
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            body = raw  # the processor refuses it, and audits the refusal
        result = self.processor.handle(
            body, source="web", forced={"user": user.name, "reactor": rid}
        )
        return JSON(result.as_dict(), status_code=200 if result.ok else 422)
