"""``hypoxia record``: the recorder (MQTT -> InfluxDB / VictoriaMetrics / SQLite), docs/recorder.md.

Also runnable as ``python -m hypoxia.cli_record SITE``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Annotated

import typer

from common.config_errors import ConfigError
from hypoxia.cli_common import SiteArg, err, fail, load_site_or_exit


def record(
    site_path: SiteArg,
    reactor: Annotated[
        list[str] | None,
        typer.Option(help="Record only this reactor (repeat; default: recorder.reactors)."),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="MQTT client id (default: recorder.client_id); each member of a share_group "
            "needs its own."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    """Record SITE's MQTT telemetry and events into the store of its [recorder] section."""
    from recorder.service import Recorder

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    site = load_site_or_exit(site_path)

    async def main() -> None:
        try:
            recorder = Recorder(site, reactors=reactor, client_id=client_id)
        except ConfigError as exc:
            raise fail(exc) from None
        err.print(
            f"recording {', '.join(recorder.topics)} from {recorder.broker.host}:"
            f"{recorder.broker.port} into {recorder.store.description}",
            highlight=False,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await recorder.run(stop)

    asyncio.run(main())
