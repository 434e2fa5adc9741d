"""What every ``hypoxia`` sub-command shares: consoles, the SITE argument, loading a site."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from common.config_errors import ConfigError

if TYPE_CHECKING:
    from controller.service.site import SiteConfig, UserConfig

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

SiteArg = Annotated[Path, typer.Argument(metavar="SITE", help="Site TOML file.")]
EXIT_CONFIG = 2


def fail(exc: ConfigError | str) -> typer.Exit:
    """Print a configuration problem and return the exit to raise (status 2)."""
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(EXIT_CONFIG)


def load_site_or_exit(path: Path) -> SiteConfig:
    """Load a site file, or exit with status 2 and the message naming file and field."""
    from controller.service.site import load_site

    try:
        return load_site(path)
    except ConfigError as exc:
        raise fail(exc) from None


def acting_user(
    site: SiteConfig, name: str | None, reactor: str, roles: Sequence[str], verb: str
) -> UserConfig:
    """The site user doing ``verb`` (``calibrate``, ``identify``) to ``reactor``.

    ``name``, else the one mapped to this OS account; one of ``roles``, allowed to command the
    reactor.

    Raises:
        ConfigError: No such user, or one who may not ``verb`` this reactor (field ``--user``).
    """
    if name is None:
        account, uid = getpass.getuser(), os.getuid()
        mapped = [u for u in site.users if u.os_user == account or u.uid == uid]
        if not mapped:
            raise ConfigError("--user", "", f"OS account {account} is no site user: name one")
        name = mapped[0].name
    user = site.user(name)
    if user is None:
        known = ", ".join(u.name for u in site.users)
        raise ConfigError("--user", "", f"no site user {name!r} (allowed: {known})")
    if user.role not in roles or not user.may_command(reactor):
        raise ConfigError(
            "--user",
            "",
            f"{name} ({user.role}) may not {verb} reactor {reactor} "
            f"(allowed: {' or '.join(roles)} for the reactor)",
        )
    return user
