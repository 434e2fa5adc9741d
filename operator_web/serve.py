"""Start the operator page and the notifier inside a running service's event loop.

``hypoxia run`` (and ``hypoxia demo``) wrap the service in :func:`operator_services`: the live hub
listens to the runners, uvicorn serves the page from the same event loop as the control cycles
(no thread, no second process: the page reads the runners' state directly), and the notifier
sends through apprise. uvicorn is started without its own signal handlers, so Ctrl-C stays the
service's, and without its logging set-up, so the terminal stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn

from controller.service.app import Service
from controller.service.site import SiteConfig
from operator_web.auth import secret_path, session_secret
from operator_web.live import LiveHub
from operator_web.notify import Notifier
from operator_web.web import OperatorPage

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the service owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]  # uvicorn's hook
        yield


def page_url(site: SiteConfig, port: int) -> str:
    """The address operators open (``[page] public_url``, else ``http://host:port``)."""
    if site.page.public_url:
        return site.page.public_url.rstrip("/")
    host = site.page.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - only displayed
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


@dataclass(slots=True)
class PageServer:
    """uvicorn serving one ASGI app in the current event loop."""

    server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    port: int = field(default=0)

    @classmethod
    def bind(cls, app: object, host: str, port: int) -> PageServer:
        """Bind the listening socket now (so the port is known and taken at once)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            ws="none",
        )
        return cls(_QuietServer(config), sock, port=sock.getsockname()[1])

    async def start(self) -> None:
        """Serve in the background; return once the server accepts connections."""
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="page")
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                return
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop serving (open event streams are closed)."""
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.task, timeout=5.0)
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass(slots=True)
class OperatorServices:
    """What :func:`operator_services` runs beside the service."""

    hub: LiveHub
    page: PageServer | None = None
    url: str | None = None
    error: str | None = None
    notifier: Notifier | None = None
    notifier_task: asyncio.Task[None] | None = None
    notifier_stop: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def operator_services(
    service: Service, *, port: int | None = None, serve_page: bool | None = None
) -> AsyncIterator[OperatorServices]:
    """Run the operator page (``[page]``) and notifications (``[notifications]``) of a service.

    Args:
        service: A built service (runners exist; they may not have cycled yet).
        port: Listen here instead of ``[page] port``.
        serve_page: Override ``[page] enabled``.

    A page that cannot bind its port is left out (``error`` says why); the service runs on.
    """
    site = service.site
    assert service.processor is not None  # noqa: S101 - set by build_service
    hub = LiveHub(service.runners, site.page.cylinders, site.state_dir / "journal.sqlite")
    hub.attach()
    out = OperatorServices(hub)
    enabled = site.page.enabled if serve_page is None else serve_page
    try:
        if enabled:
            page = OperatorPage(site, hub, service.processor)
            https = (site.page.public_url or "").startswith("https://")
            app = page.app(session_secret(secret_path(site)), https=https)
            try:
                out.page = PageServer.bind(
                    app, site.page.host, site.page.port if port is None else port
                )
            except OSError as exc:  # control matters more than the page: run without it
                out.error = f"{site.page.host}:{site.page.port}: {exc.strerror or exc}"
                log.warning("operator page not served: %s", out.error)
            else:
                out.url = page_url(site, out.page.port)
                await out.page.start()
        if site.notifications.urls:
            out.notifier = Notifier(
                site.notifications.urls, site.notifications.remind_after_min * 60.0, out.url
            )
            out.notifier.attach(service.runners)
            out.notifier_task = asyncio.create_task(
                out.notifier.run(out.notifier_stop), name="notifier"
            )
        yield out
    finally:
        hub.detach()
        if out.notifier is not None:
            out.notifier.detach()
            out.notifier_stop.set()
            if out.notifier_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(out.notifier_task, timeout=15.0)
        if out.page is not None:
            await out.page.stop()
