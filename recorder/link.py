"""The recorder's MQTT side: a persistent-session client with manual acknowledgements.

aiomqtt 2.5 has no option for manual acknowledgements, but the paho-mqtt 2.x client under it has
``manual_ack_set(True)`` and ``ack(mid, qos)``. The recorder switches it on *before* connecting (a
persistent session delivers queued messages right after CONNACK) and acknowledges each QoS 1
message itself once its points are committed to the spool. Unacknowledged messages stay in the
broker's session: it stops sending past its in-flight window (Mosquitto: 20) and sends them again
after a reconnect.
"""

from __future__ import annotations

import aiomqtt

from telemetry.client import client_for
from telemetry.config import BrokerConfig
from telemetry.topics import Topics


def persistent_client(broker: BrokerConfig, client_id: str) -> aiomqtt.Client:
    """The site's broker client (credentials, TLS) with a persistent session and manual acks.

    Must be called inside a coroutine (aiomqtt binds the running loop).
    """
    client = client_for(broker, client_id, clean_session=False)
    # the one place the recorder reaches under aiomqtt: paho's own manual-ack switch
    client._client.manual_ack_set(True)
    return client


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge a QoS 1/2 message (after its points are durable); QoS 0 needs none.

    Nothing is sent on a lost connection: the broker sends the message again on the next one.
    """
    if message.qos > 0 and client._client.is_connected():
        client._client.ack(message.mid, message.qos)


def payload_bytes(message: aiomqtt.Message) -> bytes:
    """The raw payload."""
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def subscriptions(
    root: str, site: str, reactors: list[str], share_group: str | None = None
) -> list[str]:
    """The telemetry and event topics of the reactors (``*``: all, as ``+``).

    With ``share_group`` they are shared subscriptions, ``$share/{group}/{topic}`` (MQTT 5, and
    Mosquitto 2 / EMQX for MQTT 3.1.1 clients too): the broker hands each message to one member
    of the group.
    """
    ids = ["+"] if "*" in reactors else reactors
    topics = Topics(root, site)
    prefix = f"$share/{share_group}/" if share_group else ""
    return [prefix + topic for r in ids for topic in (topics.telemetry(r), topics.event(r))]


def state_subscriptions(root: str, site: str, reactors: list[str]) -> list[str]:
    """The retained ``state`` topics of the reactors (``last_seq``, ``audit_head``)."""
    ids = ["+"] if "*" in reactors else reactors
    topics = Topics(root, site)
    return [topics.state(r) for r in ids]
