"""Run the ``hypoxia`` command as a user would (a subprocess), for CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hypoxia(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``python -m hypoxia ARGS`` from the repository root; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "hypoxia", *args],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
