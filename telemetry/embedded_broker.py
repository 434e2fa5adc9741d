"""An in-process MQTT broker (amqtt) for the zero-setup default.

Any MQTT client can subscribe on its port like on Mosquitto. Production sites point ``[broker]``
at a real broker (Mosquitto, or a cluster) instead.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker

from telemetry.config import BrokerConfig

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """amqtt listening on the configured host and port, anonymous access (loopback use)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        settings: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{config.host}:{config.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(settings)

    async def start(self) -> None:
        """Start listening."""
        await self._broker.start()
        log.info("embedded MQTT broker on %s:%s", self.config.host, self.config.port)

    async def stop(self) -> None:
        """Stop and drop the clients."""
        await self._broker.shutdown()
