"""Bounded, stable, unique names built from many parts (MQTT client ids, file names from them).

A name that lists its parts is readable while it is short: ``hypoxia-recorder-sim-ws1_ws2``. A
site of hundreds of reactors would make it hundreds of bytes long, past what a file name may be
(255 bytes on Linux) and past what a broker is required to accept, so past ``max_chars`` the
parts are replaced by their count and a hash of them: ``hypoxia-recorder-sim-100r-3f9a1c07b2``.
The hash is of the sorted parts, so the same set always gives the same name (a persistent MQTT
session and its spool are found again after a restart) and different sets different names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MAX_NAME_CHARS = 64
"""Longest name built from parts before they are replaced by a hash."""
HASH_CHARS = 10
"""Hex digits of the hash (40 bits: a collision among a site's partitions is not a concern)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def short_hash(text: str, chars: int = HASH_CHARS) -> str:
    """The first ``chars`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def bounded_name(prefix: str, parts: Iterable[str], max_chars: int = MAX_NAME_CHARS) -> str:
    """``prefix-a_b_c`` when that fits in ``max_chars``, else ``prefix-{n}r-{hash of the parts}``.

    ``parts`` are sorted first, so their order does not matter; no parts gives ``prefix``.
    """
    ordered = sorted(parts)
    if not ordered:
        return prefix
    readable = f"{prefix}-{'_'.join(ordered)}"
    if len(readable) <= max_chars:
        return readable
    return f"{prefix}-{len(ordered)}r-{short_hash(chr(0).join(ordered))}"


def safe_file_stem(name: str, max_chars: int = 100) -> str:
    """``name`` with anything but letters, digits, ``_ . -`` replaced, cut to a bounded length.

    A name cut short keeps a hash of the whole name, so two long names never share a file.
    """
    safe = _UNSAFE.sub("_", name)
    if len(safe) <= max_chars:
        return safe
    return f"{safe[: max_chars - HASH_CHARS - 1]}-{short_hash(name)}"
