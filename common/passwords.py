"""Password hashes and password files: one user store for the broker and the operator page.

A password file holds one ``name:hash`` line per user (``#`` comments allowed), argon2id hashes
made by :mod:`pwdlib` — the format amqtt's ``FileAuthPlugin`` reads, so the embedded broker and the
operator page's login check the same file. Files are written with mode 0600.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_HASHER = PasswordHash((Argon2Hasher(),))
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
"""User names a password file accepts (no ``:``, no spaces)."""


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    """True when ``password`` matches ``password_hash`` (False for any malformed hash)."""
    try:
        return bool(_HASHER.verify(password, password_hash))
    except Exception:  # an unknown or malformed hash never authenticates
        return False


def read_password_file(path: Path) -> dict[str, str]:
    """``name -> hash`` from a password file; an absent file is an empty store.

    Raises:
        ValueError: A line that is not ``name:hash``, naming the file and the line number.
    """
    if not path.exists():
        return {}
    users: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password_hash = line.partition(":")
        if not sep or not NAME_PATTERN.match(name) or not password_hash:
            msg = f"{path}: line {number}: expected 'name:hash'"
            raise ValueError(msg)
        users[name] = password_hash
    return users


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """Write ``name -> hash`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# name:argon2 hash, one user per line (hypoxia users passwd)\n")
        fh.writelines(f"{name}:{h}\n" for name, h in sorted(users.items()))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def set_password(path: Path, name: str, password: str) -> None:
    """Set (or replace) ``name``'s password in the file at ``path``."""
    if not NAME_PATTERN.match(name):
        msg = f"user name '{name}' (allowed: letters, digits, '_', '.', '-'; at most 64)"
        raise ValueError(msg)
    users = read_password_file(path)
    users[name] = hash_password(password)
    write_password_file(path, users)
