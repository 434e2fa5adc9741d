"""``hypoxia users``: passwords of the site's users (broker login, and the operator page's)."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.table import Table

from hypoxia.cli_common import SiteArg, fail, load_site_or_exit, out

users_app = typer.Typer(no_args_is_help=True, help="The site's users and their passwords.")

MIN_PASSWORD_CHARS = 8


@users_app.command("passwd")
def passwd(
    site_path: SiteArg,
    name: Annotated[str, typer.Argument(help="A user of the site file's [[users]].")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set NAME's password (argon2 hash in the site's users file, mode 0600)."""
    from common.passwords import set_password

    site = load_site_or_exit(site_path)
    if site.user(name) is None:
        known = ", ".join(u.name for u in site.users) or "none"
        raise fail(f"{site_path}: users: no user '{name}' (known: {known})")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise fail("the two passwords differ")
    if len(password) < MIN_PASSWORD_CHARS:
        raise fail(f"password: {len(password)} characters (allowed: at least {MIN_PASSWORD_CHARS})")
    set_password(site.users_file, name, password)
    out.print(f"password of {name} set in {site.users_file}")


@users_app.command("list")
def list_users(site_path: SiteArg) -> None:
    """The site's users, their roles and reactors, and whether each has a password."""
    from common.passwords import read_password_file

    site = load_site_or_exit(site_path)
    try:
        stored = read_password_file(site.users_file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    table = Table("user", "role", "reactors", "password")
    for user in site.users:
        table.add_row(
            user.name, user.role, ", ".join(user.reactors), "set" if user.name in stored else "-"
        )
    out.print(table)
