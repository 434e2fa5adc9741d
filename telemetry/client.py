"""The MQTT client the controller and the recorder share.

Broker, credentials and TLS come from the site file. Kept apart so the recorder does not import
the control service.
"""

from __future__ import annotations

import ssl

import aiomqtt

from telemetry.config import BrokerConfig


def client_for(
    broker: BrokerConfig,
    identifier: str,
    will: aiomqtt.Will | None = None,
    clean_session: bool = True,
) -> aiomqtt.Client:
    """An aiomqtt client for the site's broker (credentials and TLS from the site file)."""
    tls = None
    if broker.tls is not None:
        t = broker.tls
        tls = aiomqtt.TLSParameters(
            ca_certs=str(t.ca_file) if t.ca_file else None,
            certfile=str(t.cert_file) if t.cert_file else None,
            keyfile=str(t.key_file) if t.key_file else None,
            cert_reqs=ssl.CERT_NONE if t.insecure_skip_verify else ssl.CERT_REQUIRED,
        )
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.resolved_password(),
        identifier=identifier,
        will=will,
        clean_session=clean_session,
        keepalive=broker.keepalive_s,
        tls_params=tls,
        tls_insecure=broker.tls.insecure_skip_verify if broker.tls is not None else None,
    )
