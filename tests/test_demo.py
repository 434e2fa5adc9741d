"""The README's first command, as a real process: `hypoxia demo --exit-when-done` runs the whole
system on embedded defaults to the end of a 2 % O2 run in under three minutes, printing the page's
address at once and where the run's data and records are at the end."""

from __future__ import annotations

import re
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.service_kit import ROOT

LIMIT_S = 180.0


def test_demo_runs_to_completion_and_says_where_everything_is(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypoxia",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--exit-when-done",
            "--port",
            "0",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        bufsize=0,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    page_seen = False
    try:
        while time.monotonic() - started < LIMIT_S + 30:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline().decode(errors="replace")
                if not line:
                    break
                lines.append(line)
                found = re.search(r"Operator page: (http://127\.0\.0\.1:\d+)", line)
                if found and not page_seen:  # served from the start
                    with urllib.request.urlopen(f"{found.group(1)}/login", timeout=5) as reply:  # noqa: S310 - loopback
                        assert reply.status == 200
                    page_seen = True
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    elapsed = time.monotonic() - started
    text = "".join(lines)
    assert code == 0, text
    assert elapsed < LIMIT_S, f"{elapsed:.0f} s\n{text}"
    assert page_seen, text
    address_at = next(i for i, line in enumerate(lines) if "Operator page:" in line)
    assert address_at < 3, text  # at once
    assert "log in as erik (engineer), password " in text
    assert re.search(r"Run ws1-\S+: complete", text), text
    record = re.search(r"batch record \(html\): (\S+)", text)
    assert record is not None, text
    assert Path(record.group(1)).exists()
    assert str(tmp_path / "demo" / "state" / "journal.sqlite") in text
    assert "INFO" not in text
    assert "WARNING" not in text
    audit = subprocess.run(
        [sys.executable, "-m", "hypoxia", "audit", "verify", str(tmp_path / "demo/site.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
