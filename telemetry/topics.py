"""MQTT topic names of a site (docs/mqtt.md): one root per site, one subtree per reactor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one site under a root (``hypoxia/v1``)."""

    root: str
    site: str

    @property
    def base(self) -> str:
        """``{root}/{site}``."""
        return f"{self.root}/{self.site}"

    @property
    def controller_status(self) -> str:
        """Retained ``online`` / ``offline`` / ``lost`` (last will)."""
        return f"{self.base}/controller/status"

    def partition_status(self, partition: str | None) -> str:
        """``controller/status`` of one process of a partitioned site.

        ``controller/{partition}/status``; the plain topic when ``partition`` is ``None``.
        """
        if partition is None:
            return self.controller_status
        return f"{self.base}/controller/{partition}/status"

    @property
    def replay_result(self) -> str:
        """Where a controller answers a replay request it cannot serve (numbers pruned)."""
        return f"{self.base}/replay/result"

    @property
    def replay_request(self) -> str:
        """Where recorders ask for missing sequence numbers."""
        return f"{self.base}/replay/request"

    @property
    def commands(self) -> str:
        """Subscription for every reactor's command topic."""
        return f"{self.base}/+/cmd/+"

    def reactor_commands(self, reactor: str) -> str:
        """Subscription for one reactor's command topic (every user)."""
        return f"{self.base}/{reactor}/cmd/+"

    def telemetry(self, reactor: str) -> str:
        """Per-cycle telemetry of a reactor."""
        return f"{self.base}/{reactor}/telemetry"

    def event(self, reactor: str) -> str:
        """Events of a reactor."""
        return f"{self.base}/{reactor}/event"

    def state(self, reactor: str) -> str:
        """Retained state of a reactor."""
        return f"{self.base}/{reactor}/state"

    def command(self, reactor: str, user: str) -> str:
        """Where ``user`` publishes commands for ``reactor``."""
        return f"{self.base}/{reactor}/cmd/{user}"

    def command_result(self, reactor: str, user: str) -> str:
        """Where the answer to ``user``'s command goes."""
        return f"{self.base}/{reactor}/cmd_result/{user}"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """(reactor, user) of a command topic, or ``None``."""
        parts = topic.removeprefix(self.base + "/").split("/")
        if len(parts) == 3 and parts[1] == "cmd" and parts[0] and parts[2]:
            return parts[0], parts[2]
        return None
