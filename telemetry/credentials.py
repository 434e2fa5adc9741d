"""Service accounts of the embedded broker: generated once, kept in the state directory.

The controller and the recorder connect to the embedded broker as ``controller`` and
``recorder``, with random passwords generated on first start into
``<state_dir>/service-credentials.json`` (mode 0600). Anyone who can read that file can act as
the service — the same trust as the state directory itself.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from telemetry.config import BrokerConfig

SERVICE_ACCOUNTS = ("controller", "recorder")
FILE_NAME = "service-credentials.json"


def service_credentials(state_dir: Path) -> dict[str, str]:
    """``account -> password`` for the service accounts, created (0600) when missing."""
    path = state_dir / FILE_NAME
    if path.exists():
        data = json.loads(path.read_text())
        if isinstance(data, dict) and all(isinstance(data.get(a), str) for a in SERVICE_ACCOUNTS):
            return {a: str(data[a]) for a in SERVICE_ACCOUNTS}
    creds = {account: secrets.token_urlsafe(24) for account in SERVICE_ACCOUNTS}
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(FILE_NAME + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return creds


def as_account(broker: BrokerConfig, state_dir: Path, account: str) -> BrokerConfig:
    """``broker`` with the credentials of a service account when the broker is the embedded one.

    An external broker's settings are returned unchanged (its credentials come from the site
    file).
    """
    if not broker.embedded:
        return broker
    password = service_credentials(state_dir)[account]
    return broker.model_copy(
        update={"username": account, "password": password, "password_env": None}
    )
