"""Print a record's HTML to PDF (and screenshot it) with headless Chromium (Debian's ``chromium``).

Every call uses a fresh, throw-away profile and switches off everything that talks to the
network; the document itself loads nothing from outside (records/render.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from records.state import RecordError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 120.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary (``$HYPOXIA_CHROMIUM`` or the first found on PATH)."""
    found = os.environ.get("HYPOXIA_CHROMIUM") or next(
        (path for name in BROWSERS if (path := shutil.which(name))), None
    )
    if found is None:
        msg = "chromium not found: install Debian's chromium (apt-get install chromium)"
        raise RecordError(msg)
    return found


def _run(args: list[str], target: Path) -> None:
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="hypoxia-chromium-") as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            done = subprocess.run(  # noqa: S603 - fixed flags, paths we created
                cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            msg = f"chromium did not finish {target.name} within {TIMEOUT_S:.0f} s"
            raise RecordError(msg) from None
    if not target.exists() or target.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        msg = f"chromium wrote no {target.name} (exit {done.returncode}): {tail[0]}"
        raise RecordError(msg)


def print_pdf(html: Path, pdf: Path) -> Path:
    """Print ``html`` to ``pdf`` (A4, the page's own @page header and footer)."""
    _run(
        [
            "--no-pdf-header-footer",
            "--run-all-compositor-stages-before-draw",
            f"--print-to-pdf={pdf.resolve()}",
            html.resolve().as_uri(),
        ],
        pdf,
    )
    return pdf


def screenshot(html: Path, png: Path, width_px: int = 1200, height_px: int = 3000) -> Path:
    """A PNG of the top ``height_px`` of the page as a browser shows it."""
    _run(
        [
            f"--window-size={width_px},{height_px}",
            f"--screenshot={png.resolve()}",
            html.resolve().as_uri(),
        ],
        png,
    )
    return png
