"""Site-file sections for telemetry: the MQTT broker, the recorder and its store.

With no ``[broker]`` section the service starts an embedded broker (zero setup); with no
``[recorder.store]`` the recorder writes to SQLite in the site's state directory.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS to the broker: CA bundle, optional client certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class BrokerConfig(_Strict):
    """The MQTT broker the controller and the recorder connect to.

    Attributes:
        embedded: Start an in-process broker (amqtt) on ``host:port`` instead of connecting to
            an external one (the zero-setup default when the site file has no ``[broker]``).
            It authenticates every client (site users and the service accounts) and applies
            per-user topic rules (telemetry/embedded_broker.py).
        allow_anonymous: Embedded broker only: let clients in without a password (no topic
            rules either). Refused unless the broker listens on a loopback address.
        host / port: Where the broker listens (the embedded broker binds to ``host``).
        username / password: Credentials; ``password_env`` names an environment variable that
            holds the password instead (keeps secrets out of the site file).
        root: Topic root (``hypoxia/v1``); the site id follows it.
        keepalive_s: MQTT keep-alive, s.
        tls: TLS settings, or ``None`` for plain TCP.
    """

    embedded: bool = False
    allow_anonymous: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    root: str = Field(default="hypoxia/v1", pattern=r"^[A-Za-z0-9_\-/]+$")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _closed_unless_loopback(self) -> Self:
        if self.allow_anonymous and not self.embedded:
            msg = "allow_anonymous applies to the embedded broker only (allowed: embedded = true)"
            raise ValueError(msg)
        if self.allow_anonymous and not is_loopback(self.host):
            msg = (
                f"@host: the embedded broker would accept anonymous clients on {self.host}; "
                "refused (allowed: a loopback address such as 127.0.0.1, or allow_anonymous = "
                "false so that every client logs in)"
            )
            raise ValueError(msg)
        return self

    def resolved_password(self) -> str | None:
        """The password, from the file or from ``password_env``."""
        if self.password_env:
            return os.environ.get(self.password_env)
        return self.password


class InfluxDB1Store(_Strict):
    """InfluxDB 1.x through its v1 ``/write`` API (database created if missing)."""

    kind: Literal["influxdb1"]
    url: str = Field(pattern=r"^https?://")
    database: str = Field(default="hypoxia", min_length=1)
    username: str | None = None
    password: str | None = None
    retention_policy: str | None = None


class InfluxDB2Store(_Strict):
    """InfluxDB 2.x / 3.x, or VictoriaMetrics, through the v2 write API (influxdb-client)."""

    kind: Literal["influxdb2"]
    url: str = Field(pattern=r"^https?://")
    org: str = "hypoxia"
    bucket: str = "hypoxia"
    token: str | None = None
    token_env: str | None = None


class SqliteStore(_Strict):
    """The embedded default: points in a SQLite file (relative paths: the state directory)."""

    kind: Literal["sqlite"]
    path: Path = Path("telemetry.sqlite")


StoreConfig = Annotated[InfluxDB1Store | InfluxDB2Store | SqliteStore, Field(discriminator="kind")]


class RecorderConfig(_Strict):
    """How ``hypoxia record`` consumes MQTT and writes the store.

    Attributes:
        store: Where points go (default: SQLite in the state directory).
        reactors: Which reactors this recorder records (``["*"]``: all); partition reactors
            among recorders to scale out.
        client_id: MQTT client id of the persistent session (default ``hypoxia-recorder-<site>``,
            with the partition's reactors, or a hash of them past 64 characters:
            :func:`recorder.service.default_client_id`).
        share_group: Subscribe as a member of this MQTT shared-subscription group
            (``$share/<group>/...``): the broker hands each message to one member, so several
            recorders split one stream. Each member needs its own client id, and gap detection
            must be off (a member sees only part of each reactor's numbers; docs/recorder.md).
        batch_size / batch_interval_s: Write when this many points are waiting, or this often.
        gap_detection: Ask the controller to replay missing sequence numbers.
        backfill: A recorder that first sees a reactor at sequence N asks for 1..N-1 too (the
            controller's outbox holds them for its replay window), so a late start loses
            nothing younger than the window.
        max_spool_mb: Disk spool limit while the store is down; past it the recorder stops
            acknowledging MQTT messages (the broker keeps them) rather than dropping any.
    """

    store: StoreConfig = SqliteStore(kind="sqlite")
    reactors: list[str] = Field(default_factory=lambda: ["*"])
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    share_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,32}$")
    batch_size: int = Field(default=500, ge=1, le=100_000)
    batch_interval_s: float = Field(default=1.0, gt=0, le=60)
    gap_detection: bool = True
    backfill: bool = True
    max_spool_mb: float = Field(default=1024.0, gt=0)

    @model_validator(mode="after")
    def _shared_without_gaps(self) -> Self:
        if self.share_group is not None and self.gap_detection:
            msg = (
                f"@share_group: '{self.share_group}' with gap_detection = true: a member of a "
                "shared subscription receives only part of each reactor's sequence numbers and "
                "would take its peers' messages for gaps (allowed: gap_detection = false with "
                "share_group, or no share_group and reactors partitioned among recorders)"
            )
            raise ValueError(msg)
        return self
