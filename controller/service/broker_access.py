"""Who may do what on the embedded broker: the site's users and the service accounts.

The same rules as the example Mosquitto ACL (examples/mosquitto/acl), derived from the site file
(``{base}`` is ``{root}/{site}``):

| account | publishes | subscribes |
|---|---|---|
| controller | everything under the topic root | everything under the topic root |
| recorder | ``{base}/replay/request`` | everything under the topic root |
| a user with all reactors | ``{base}/+/cmd/{user}`` | ``{base}/#`` |
| a user with some reactors | ``{base}/{reactor}/cmd/{user}`` each | ``{base}/{reactor}/#`` each |
| a viewer | nothing | as above |

What a role may *do* with a command is checked again by the command processor; the broker only
makes sure the user in a command topic is the user who logged in. Users need a password in the
site's users file (``hypoxia users passwd``); a user without one cannot log in.
"""

from __future__ import annotations

import logging

from common.passwords import hash_password, read_password_file
from controller.service.site import SiteConfig
from telemetry.credentials import service_credentials
from telemetry.embedded_broker import EmbeddedBroker, TopicRules

log = logging.getLogger(__name__)


def topic_rules(site: SiteConfig) -> TopicRules:
    """Publish and subscribe filters of every account of ``site``."""
    root = site.broker.root
    base = f"{root}/{site.site}"
    publish: dict[str, list[str]] = {
        "controller": [f"{root}/#"],
        "recorder": [f"{base}/replay/request"],
    }
    subscribe: dict[str, list[str]] = {"controller": [f"{root}/#"], "recorder": [f"{root}/#"]}
    for user in site.users:
        reactors = ["+"] if "*" in user.reactors else list(user.reactors)
        publish[user.name] = (
            [] if user.role == "viewer" else [f"{base}/{r}/cmd/{user.name}" for r in reactors]
        )
        subscribe[user.name] = (
            [f"{base}/#"] if "*" in user.reactors else [f"{base}/{r}/#" for r in reactors]
        )
    return TopicRules(publish, subscribe)


def embedded_broker(site: SiteConfig) -> EmbeddedBroker:
    """The embedded broker of ``site``: its users' hashes, the service accounts and the rules."""
    stored = read_password_file(site.users_file)
    users = {u.name: stored[u.name] for u in site.users if u.name in stored}
    missing = [u.name for u in site.users if u.name not in stored]
    if missing and not site.broker.allow_anonymous:
        log.warning(
            "no password for %s in %s: they cannot log in to the broker "
            "(set one with: hypoxia users passwd SITE NAME)",
            ", ".join(missing),
            site.users_file,
        )
    for account, password in service_credentials(site.state_dir).items():
        users[account] = hash_password(password)
    return EmbeddedBroker(
        site.broker, users, topic_rules(site), site.state_dir / "embedded-broker.passwd"
    )
