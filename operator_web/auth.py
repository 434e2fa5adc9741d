"""Logins, sessions, roles and CSRF tokens of the operator page.

* **Users and passwords** are the site's: ``[[users]]`` of the site file give the role and the
  reactors, the argon2 password file (``hypoxia users passwd SITE NAME``,
  :mod:`common.passwords`) the password, the same file the embedded MQTT broker checks.
* **Sessions** are Starlette's signed cookies (itsdangerous): the cookie carries the user name
  and a CSRF token, signed with a key kept in the state directory (mode 0600), ``HttpOnly``,
  ``SameSite=Strict``, and ``Secure`` when the page's public address is https.
* **CSRF**: every state-changing request must send the session's token in ``X-CSRF-Token``
  (compared in constant time) and, when the browser says where it comes from, come from the
  page's own origin.

A role decides what the page offers, but never what is allowed: every action goes to the same
:class:`~controller.service.commands.CommandProcessor` as the control socket and MQTT, which
checks the role again and audits the command.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from common.passwords import read_password_file, verify_password
from controller.service.commands import PERMISSIONS
from controller.service.site import SiteConfig

FAILED_LOGIN_DELAY_S = 1.0
"""A failed login answers only after this long (slows down guessing)."""


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The logged-in user of a request."""

    name: str
    role: str
    reactors: tuple[str, ...]
    csrf: str

    def may_view(self, reactor: str) -> bool:
        """Viewers and above see the reactors they are listed for (``*``: all)."""
        return "*" in self.reactors or reactor in self.reactors

    def verbs(self, reactor: str) -> list[str]:
        """Commands the page offers this user on ``reactor`` (the processor decides)."""
        if not self.may_view(reactor):
            return []
        return sorted(PERMISSIONS.get(self.role, frozenset()))


def session_secret(path: Path) -> str:
    """The key that signs session cookies, created (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def secret_path(site: SiteConfig) -> Path:
    """``[page] secret_file`` (relative: in the state directory) or ``state_dir/page-secret``."""
    path = site.page.secret_file
    if path is None:
        return site.state_dir / "page-secret"
    return path if path.is_absolute() else site.state_dir / path


async def check_login(site: SiteConfig, name: str, password: str) -> str | None:
    """``None`` when ``name`` may log in with ``password``, else why not (said to the user).

    The argon2 check runs in a worker thread: it must not delay a control cycle.
    """
    user = site.user(name)
    hashes = await asyncio.to_thread(read_password_file, site.users_file)
    stored = hashes.get(name)
    ok = (
        user is not None
        and stored is not None
        and await asyncio.to_thread(verify_password, password, stored)
    )
    if not ok:
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        return "unknown user or wrong password"
    return None


def new_session(request: Request, name: str) -> None:
    """Log ``name`` in on this browser: a fresh session with a fresh CSRF token."""
    request.session.clear()
    request.session["user"] = name
    request.session["csrf"] = secrets.token_urlsafe(32)


def current_user(request: Request, site: SiteConfig) -> SessionUser | None:
    """The logged-in user, or ``None`` (no session, or the user left the site file)."""
    name = request.session.get("user")
    csrf = request.session.get("csrf")
    if not isinstance(name, str) or not isinstance(csrf, str):
        return None
    user = site.user(name)
    if user is None:
        return None
    return SessionUser(user.name, user.role, tuple(user.reactors), csrf)


def csrf_ok(request: Request, user: SessionUser) -> bool:
    """The request carries the session's CSRF token and comes from the page's own origin."""
    sent = request.headers.get("x-csrf-token", "")
    if not hmac.compare_digest(sent.encode(), user.csrf.encode()):
        return False
    return same_origin(request)


def same_origin(request: Request) -> bool:
    """``Origin`` (when sent) names the host the request was made to."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host
