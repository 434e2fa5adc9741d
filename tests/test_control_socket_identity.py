"""Who commands through the control socket: the kernel's peer uid (SO_PEERCRED), mapped to a site
user, not the ``user`` a command names. Units with the real credentials of this process, then a
real socket with clients running as other OS users (a child process per user, when run as root)."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.config_errors import ConfigError
from controller.service.app import _serve_socket
from controller.service.peers import Identity, decide, identify, peer_of
from controller.service.site import SiteConfig, load_site
from tests.service_kit import HOLD_5, site_file, stack


def _site(tmp: Path, top: str = "", olga: str = "", extra_users: str = "") -> Path:
    """The example site with extra top-level keys, a mapping for olga and more users."""
    path = site_file(tmp)
    text = path.read_text().replace('site = "sim"\n', f'site = "sim"\n{top}', 1)
    text = text.replace('name = "olga"\n', f'name = "olga"\n{olga}', 1)
    path.write_text(text + extra_users)
    return path


# ---- units: the mapping, with this process's real credentials ------------------------------


def _me() -> tuple[Any, int]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        peer = peer_of(a)
    finally:
        a.close()
        b.close()
    assert peer is not None
    assert peer.uid == os.geteuid()
    return peer, peer.uid


def test_an_unmapped_peer_is_told_how_to_map_it(tmp_path: Path) -> None:
    peer, uid = _me()
    site = load_site(_site(tmp_path, olga=f"uid = {uid + 4242}\n"))  # a mapping, not to us
    identity = identify(site, peer, service_uid=uid + 1)  # and we are not the service's user
    assert identity.kind == "unmapped"
    assert f'os_user = "{peer.os_name}"' in identity.problem
    assert f"uid = {uid}" in identity.problem
    decision = decide(identity, {"verb": "note", "user": "olga"})
    assert decision.refused == identity.problem
    # the service's own OS user, mapped to nobody: commands name their user, as before
    assert identify(site, peer, service_uid=uid).kind == "service"
    assert decide(Identity("service", peer), {"user": "erik"}).refused == ""


def test_a_mapped_peer_is_its_user_and_only_an_admin_acts_for_another(tmp_path: Path) -> None:
    peer, uid = _me()
    site = load_site(_site(tmp_path, olga=f"uid = {uid}\n"))
    identity = identify(site, peer, service_uid=uid)  # mapped wins, even for the service's user
    assert identity.kind == "user"
    assert identity.user is not None
    assert identity.user.name == "olga"
    assert decide(identity, {"verb": "note"}).data == {"verb": "note", "user": "olga"}
    assert decide(identity, {"verb": "note", "user": "olga"}).authenticated_user == "olga"
    refused = decide(identity, {"verb": "note", "user": "erik"}).refused
    assert "site user 'olga' (role operator)" in refused
    assert "only an admin may command as another user (here 'erik')" in refused
    admin = site.model_copy(
        update={"users": [u.model_copy(update={"role": "admin"}) for u in site.users]}
    )
    acting = decide(identify(admin, peer, uid), {"verb": "note", "user": "erik"})
    assert (acting.refused, acting.acting_for) == ("", "olga")


def test_one_os_account_stands_for_one_site_user(tmp_path: Path) -> None:
    extra = '\n[[users]]\nname = "ada"\nrole = "admin"\nos_user = "nobody"\n'
    with pytest.raises(ConfigError, match="'nobody' is already 'olga'"):
        load_site(_site(tmp_path, olga='os_user = "nobody"\n', extra_users=extra))


# ---- a real socket, clients as other OS users ------------------------------------------------

CLIENT = """
import json, socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.settimeout(10)
    s.connect(sys.argv[1])
    for request in sys.argv[2:]:
        s.sendall(request.encode() + b"\\n")
        data = b""
        while not data.endswith(b"\\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        sys.stdout.write(data.decode())
"""
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _can_switch_users() -> bool:
    if os.geteuid() != 0 or SYSTEM_PYTHON is None:
        return False
    try:
        for name in ("nobody", "daemon", "bin"):
            pwd.getpwnam(name)
        grp.getgrnam("nogroup")
    except KeyError:
        return False
    return True


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A folder other OS users can reach (pytest's are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="hx-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _as(os_user: str, sock: Path, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send requests over the control socket from a process running as ``os_user``."""
    assert SYSTEM_PYTHON is not None
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        "-I",
        "-c",
        CLIENT,
        str(sock),
        *(json.dumps(r) for r in requests),
        user=os_user,
        group="nogroup",
        extra_groups=[],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, errors.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def _as_service_user(sock: Path, request: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(json.dumps(request).encode() + b"\n")
    reply: dict[str, Any] = json.loads(await reader.readline())
    writer.close()
    await writer.wait_closed()
    return reply


@pytest.mark.skipif(not _can_switch_users(), reason="needs root, /usr/bin/python3, nobody/daemon")
async def test_the_peer_uid_decides_who_commands(tmp_path: Path, socket_dir: Path) -> None:
    sock = socket_dir / "sim.sock"
    path = _site(
        tmp_path,
        top=f'control_socket = "{sock}"\ncontrol_socket_group = "nogroup"\n',
        olga='os_user = "nobody"\n',
        extra_users='\n[[users]]\nname = "ada"\nrole = "admin"\nos_user = "daemon"\n',
    )
    async with stack(tmp_path, HOLD_5, site_path=path) as st:
        server = await _serve_socket(st.service)
        try:
            mode = sock.stat()
            assert stat.S_IMODE(mode.st_mode) == 0o660
            assert mode.st_gid == grp.getgrnam("nogroup").gr_gid
            run = st.runner.run
            assert run is not None
            note = {"verb": "note", "reactor": "ws1", "run_id": run.run_id}

            # nobody is olga (operator): as herself (named or not), yes; as erik, no
            own, unnamed, spoof, status = await _as(
                "nobody",
                sock,
                {**note, "user": "olga", "text": "mine"},
                {**note, "text": "no --user given"},
                {**note, "user": "erik", "text": "not mine"},
                {"verb": "status"},
            )
            assert own["ok"], own
            assert unnamed["ok"], unnamed
            assert not spoof["ok"]
            assert "OS user 'nobody' is site user 'olga'" in spoof["message"]
            assert "only an admin may command as another user" in spoof["message"]
            assert status["ok"]
            assert "ws1" in status["reactors"]

            # daemon is ada (admin): may act for erik, recorded as both
            (for_erik,) = await _as("daemon", sock, {**note, "user": "erik", "text": "for erik"})
            assert for_erik["ok"], for_erik

            # bin is nobody here: refused, told how to map it, even for status
            (stranger,) = await _as("bin", sock, {"verb": "status", "user": "erik"})
            assert not stranger["ok"]
            assert "OS user 'bin' (uid 2) is not a site user" in stranger["message"]
            assert 'os_user = "bin"' in stranger["message"]

            # the service's own OS user (root here), mapped to nobody: as before
            mine = await _as_service_user(sock, {**note, "user": "erik", "text": "root"})
            assert mine["ok"], mine
        finally:
            server.close()
            await server.wait_closed()
        records = st.service.audit.records()
        by_seq = {r.seq: r for r in records}
        assert by_seq[own["audit_seq"]].user == "olga"
        assert by_seq[unnamed["audit_seq"]].user == "olga"
        refused = by_seq[spoof["audit_seq"]]
        assert (refused.user, refused.outcome.split(":")[0]) == ("erik", "refused")
        assert "ctl:nobody(uid 65534)" in refused.new_value
        assert by_seq[for_erik["audit_seq"]].user == "ada as erik"
        assert by_seq[for_erik["audit_seq"]].outcome == "accepted"
        outsider = by_seq[stranger["audit_seq"]]
        assert outsider.outcome.startswith("refused: OS user 'bin'")
        assert "ctl:bin(uid 2)" in outsider.new_value
        assert by_seq[mine["audit_seq"]].user == "erik"
        assert st.service.audit.verify().ok


async def test_a_missing_socket_group_is_a_clear_error(tmp_path: Path, socket_dir: Path) -> None:
    sock = socket_dir / "sim.sock"
    top = f'control_socket = "{sock}"\ncontrol_socket_group = "no-such-group-x"\n'
    async with stack(tmp_path, HOLD_5, site_path=_site(tmp_path, top=top)) as st:
        with pytest.raises(ConfigError, match="no OS group 'no-such-group-x'"):
            await _serve_socket(st.service)


def test_without_peer_credentials_only_a_private_socket_serves(tmp_path: Path) -> None:
    site: SiteConfig = load_site(_site(tmp_path))
    assert identify(site, None, 0).kind == "service"
    opened = site.model_copy(update={"control_socket_group": "nogroup"})
    assert identify(opened, None, 0).kind == "unknown"
