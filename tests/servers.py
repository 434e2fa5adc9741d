"""Real servers for tests, started on free loopback ports: Mosquitto, InfluxDB 1.6.7 and
VictoriaMetrics (Debian packages, installed by scripts/test). Each can be stopped, killed and
started again on the same port and data directory, for outage tests."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.service_kit import free_port


def _wait(predicate: object, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    msg = f"{what} did not come up within {timeout_s} s"
    raise TimeoutError(msg)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:  # noqa: S310 - loopback only
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError):
        return False


class _Server:
    """A server process with start / stop (SIGTERM) / kill (SIGKILL)."""

    binary = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.root / "server.log"

    @classmethod
    def available(cls) -> bool:
        """True when the server's binary is installed."""
        return shutil.which(cls.binary) is not None

    def command(self) -> list[str]:
        """The command line."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers."""
        return _port_open(self.port)

    def start(self) -> None:
        """Start and wait until it answers."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        _wait(self.ready, self.binary)

    def stop(self) -> None:
        """Stop gracefully."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Mosquitto(_Server):
    """Mosquitto on 127.0.0.1 with persistence; optional password file and ACL."""

    binary = "mosquitto"

    def __init__(
        self, root: Path, password_file: Path | None = None, acl_file: Path | None = None
    ) -> None:
        super().__init__(root)
        self.password_file = password_file
        self.acl_file = acl_file

    def command(self) -> list[str]:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.root}/",
            "max_queued_messages 100000",
            # run as root, Mosquitto switches to user "mosquitto", which may not write here
            f"user {getpass.getuser()}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
        ]
        if self.password_file:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        conf = self.root / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [self.binary, "-c", str(conf)]


class InfluxDB1(_Server):
    """InfluxDB 1.6.7 (v1 /write and InfluxQL /query)."""

    binary = "influxd"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.rpc_port = free_port()

    def command(self) -> list[str]:
        conf = self.root / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.root}/meta"
[data]
  dir = "{self.root}/data"
  wal-dir = "{self.root}/wal"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
""")
        return [self.binary, "-config", str(conf)]

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/ping")

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"


class VictoriaMetrics(_Server):
    """VictoriaMetrics (accepts the InfluxDB v2 write API)."""

    binary = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.root}/data",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-search.latencyOffset=0s",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=ERROR",
        ]

    def ready(self) -> bool:
        return _http_ok(f"{self.url}/health")

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def flush(self) -> None:
        """Make recent writes searchable now."""
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5),  # noqa: S310
        ):
            pass
