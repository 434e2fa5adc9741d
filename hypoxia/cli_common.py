"""What every ``hypoxia`` sub-command shares: consoles, the SITE argument, loading a site."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from common.config_errors import ConfigError

if TYPE_CHECKING:
    from controller.service.site import SiteConfig

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
