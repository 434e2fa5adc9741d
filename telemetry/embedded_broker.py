"""An in-process MQTT broker (amqtt) for the zero-setup default, closed like the production path.

Anonymous clients are refused: every client logs in with a name and password checked against a
password file of argon2 hashes (amqtt's ``FileAuthPlugin``) — the site's users, plus the
``controller`` and ``recorder`` service accounts (:mod:`telemetry.credentials`). Topic rules
(:class:`TopicRules`) say what each user may publish and subscribe to, the same rules as the
example Mosquitto ACL: each user publishes only on its own command topic, the recorder only asks
for replays, the controller publishes everything. amqtt's ACL plugin is used with our own config
class (:class:`SiteTopicAcl`), since its stock class still offers only the deprecated ``acl`` key
for subscriptions.

The broker listens on loopback unless the site file names another address; with anonymous access
allowed it may listen on loopback only (checked when the site file loads).

Production sites point ``[broker]`` at a real broker (Mosquitto, or a cluster) instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.topic_checking import TopicAccessControlListPlugin

from common.passwords import write_password_file
from telemetry.config import BrokerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicRules:
    """Topic filters each user may publish to and subscribe to (``+`` and ``#`` allowed)."""

    publish: dict[str, list[str]] = field(default_factory=dict)
    subscribe: dict[str, list[str]] = field(default_factory=dict)


class SiteTopicAcl(TopicAccessControlListPlugin):  # type: ignore[misc]
    """amqtt's topic ACL plugin with explicit ``publish_acl`` and ``subscribe_acl`` settings."""

    @dataclass
    class Config:
        """User name -> allowed topic filters, for publishing and for subscribing."""

        publish_acl: dict[str, list[str]] = field(default_factory=dict)
        subscribe_acl: dict[str, list[str]] = field(default_factory=dict)


class EmbeddedBroker:
    """amqtt listening on the configured host and port, with authentication and topic rules.

    Args:
        config: The ``[broker]`` section (``embedded = true``).
        users: ``name -> argon2 hash`` of every account that may log in.
        rules: What each account may publish and subscribe to.
        password_file: Where the broker's password file is written (mode 0600).
    """

    def __init__(
        self, config: BrokerConfig, users: dict[str, str], rules: TopicRules, password_file: Path
    ) -> None:
        self.config = config
        write_password_file(password_file, users)
        plugins: dict[str, Any]
        if config.allow_anonymous:
            plugins = {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            }
        else:
            plugins = {
                "amqtt.plugins.authentication.FileAuthPlugin": {
                    "password_file": str(password_file)
                },
                f"{SiteTopicAcl.__module__}.SiteTopicAcl": {
                    "publish_acl": rules.publish,
                    "subscribe_acl": rules.subscribe,
                },
            }
        settings: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{config.host}:{config.port}"}},
            "plugins": plugins,
        }
        self._broker = Broker(settings)

    async def start(self) -> None:
        """Start listening."""
        await self._broker.start()
        log.info(
            "embedded MQTT broker on %s:%s (%s)",
            self.config.host,
            self.config.port,
            "anonymous allowed" if self.config.allow_anonymous else "authenticated",
        )

    async def stop(self) -> None:
        """Stop and drop the clients."""
        await self._broker.shutdown()
