"""``hypoxia demo``: the whole system on embedded defaults in one command (see hypoxia/demo.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from hypoxia.cli_common import out


def demo(
    folder: Annotated[
        Path, typer.Option("--dir", help="Folder for the demo's site, state, records and logs.")
    ] = Path("hypoxia-demo"),
    port: Annotated[
        int, typer.Option(help="Port of the operator page (if busy: any free).")
    ] = 8321,
    exit_when_done: Annotated[
        bool, typer.Option("--exit-when-done", help="Exit when the run is done (for scripts).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show broker and library logs in the terminal.")
    ] = False,
) -> None:
    """Simulated instruments, controller, broker, recorder and operator page: a 2 % O2 run."""
    from hypoxia.demo import prepare, quiet_logging
    from hypoxia.demo_run import run_demo

    files = prepare(folder, port)
    quiet_logging(files.log, verbose)
    out.print(f"hypoxia demo in {files.root} (a previous demo's state there is replaced)")
    code = asyncio.run(run_demo(files, out, exit_when_done=exit_when_done))
    raise typer.Exit(code)
