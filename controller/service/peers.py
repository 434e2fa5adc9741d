"""Who is on the other end of the control socket: the peer's OS uid as a site user.

The kernel tells a Unix socket server the uid of the process that connected (``SO_PEERCRED``);
the caller cannot choose it. A site user is mapped to an OS account in the site file
(``[[users]] os_user = "olga"`` or ``uid = 1001``). Then:

* a peer mapped to a site user acts as that user: a command naming another ``user`` is refused
  (audited), unless the mapped user's role is ``admin``, who may act for others (audited as
  ``"olga as erik"``, with the other user's permissions);
* a peer that is the service's own OS user and mapped to nobody keeps the behaviour from before
  identities: the ``user`` a command names is taken as given (the socket is private to that
  account unless ``control_socket_group`` opens it, and whoever holds that account holds the
  service's files anyway);
* any other peer is refused, with the line to add to the site file.

Linux gives ``SO_PEERCRED``; where it is missing, only the private socket of the service's own
user is served.
"""

from __future__ import annotations

import contextlib
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from controller.service.site import SiteConfig, UserConfig

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class _HasSockopt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a Unix socket, as the kernel reports it."""

    pid: int
    uid: int
    gid: int

    @property
    def os_name(self) -> str:
        """The uid's account name (``uid N`` when the host's passwd does not list it)."""
        with contextlib.suppress(KeyError):
            return pwd.getpwuid(self.uid).pw_name
        return f"uid {self.uid}"


def peer_of(sock: _HasSockopt | None) -> Peer | None:
    """The peer's credentials (``SO_PEERCRED``), or ``None`` where the platform has none."""
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size))
    except (OSError, struct.error):
        return None
    return Peer(pid, uid, gid)


def os_uid(name: str) -> int | None:
    """The uid of an OS account name, ``None`` when the host does not know it."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name).pw_uid
    return None


def users_of_uid(site: SiteConfig, uid: int) -> list[UserConfig]:
    """The site users mapped to ``uid`` (by ``uid`` or by an ``os_user`` resolving to it)."""
    return [
        u
        for u in site.users
        if u.uid == uid or (u.os_user is not None and os_uid(u.os_user) == uid)
    ]


@dataclass(frozen=True, slots=True)
class Identity:
    """What the control socket knows of a caller.

    Attributes:
        kind: ``user`` (mapped to a site user), ``service`` (the service's own OS user, not
            mapped: commands name their user), ``unmapped``, ``ambiguous`` (several site users)
            or ``unknown`` (no peer credentials on a socket open to a group).
        peer: The kernel's credentials of the caller.
        user: The site user the caller is (kind ``user``).
        problem: Why the caller is refused (kinds ``unmapped``, ``ambiguous``, ``unknown``).
    """

    kind: Literal["user", "service", "unmapped", "ambiguous", "unknown"]
    peer: Peer | None
    user: UserConfig | None = None
    problem: str = ""

    @property
    def source(self) -> str:
        """Where a command came from, for the audit trail: ``ctl:olga(uid 1001)``."""
        if self.peer is None:
            return "ctl"
        return f"ctl:{self.peer.os_name}(uid {self.peer.uid})"


def identify(site: SiteConfig, peer: Peer | None, service_uid: int) -> Identity:
    """Map a control-socket peer to a site user (see the module docstring for the rules)."""
    if peer is None:
        if site.control_socket_group is None:
            return Identity("service", None)
        return Identity(
            "unknown",
            None,
            problem="this platform does not tell who is calling (no SO_PEERCRED), so a control "
            "socket opened to a group serves nobody; remove control_socket_group",
        )
    mapped = users_of_uid(site, peer.uid)
    if len(mapped) == 1:
        return Identity("user", peer, mapped[0])
    if len(mapped) > 1:
        names = ", ".join(u.name for u in mapped)
        return Identity(
            "ambiguous",
            peer,
            problem=f"OS user '{peer.os_name}' (uid {peer.uid}) is mapped to several site users "
            f"({names}); map it to one in the site file",
        )
    if peer.uid == service_uid:
        return Identity("service", peer)
    return Identity(
        "unmapped",
        peer,
        problem=f"OS user '{peer.os_name}' (uid {peer.uid}) is not a site user; map it in the "
        f'site file with os_user = "{peer.os_name}" (or uid = {peer.uid}) in its [[users]] '
        "entry",
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one control-socket request.

    Attributes:
        refused: Why it is refused (``""``: go ahead).
        data: The request to hand on (``user`` filled in for a mapped caller who named none).
        authenticated_user: The only user the command may name (``None``: any).
        acting_for: The admin acting for another user (record ``"admin as user"``).
    """

    refused: str = ""
    data: dict[str, Any] | None = None
    authenticated_user: str | None = None
    acting_for: str | None = None


def decide(identity: Identity, data: dict[str, Any] | None) -> Decision:
    """Apply the identity rules to one parsed request (``None``: not a JSON object)."""
    if identity.kind == "service":
        return Decision(data=data)
    user = identity.user
    if user is None:
        return Decision(refused=identity.problem)
    if data is None:
        return Decision(authenticated_user=user.name)
    claimed = data.get("user")
    if claimed is None or data.get("verb") == "status":
        data = {**data, "user": user.name} if claimed is None else data
        return Decision(data=data, authenticated_user=user.name)
    if claimed == user.name:
        return Decision(data=data, authenticated_user=user.name)
    if user.role == "admin":
        return Decision(data=data, acting_for=user.name)
    peer = identity.peer
    who = f"OS user '{peer.os_name}'" if peer else "you"
    return Decision(
        refused=f"{who} is site user '{user.name}' (role {user.role}); only an admin may "
        f"command as another user (here '{claimed}')"
    )
