"""``hypoxia simulate-devices`` and ``hypoxia devices read``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
from collections.abc import Coroutine
from typing import Annotated, Any

import typer
from rich.table import Table

from common.config_errors import ConfigError
from hypoxia.cli_common import SiteArg, fail, load_site_or_exit, out

devices_app = typer.Typer(no_args_is_help=True, help="Talk to the instruments of a site.")


def simulate_devices(
    site_path: SiteArg,
    vessel: Annotated[str, typer.Option(help="Reference vessel name or vessel TOML file.")],
    speed: Annotated[float, typer.Option(help="Plant time runs this much faster.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sensor-noise seed.")] = 0,
) -> None:
    """Serve the simulated instruments SITE names, where it names them, until interrupted."""
    from controller.service.clock import ScaledClock
    from simulators.site_sim import serve_site
    from simulators.vessel import load_vessel

    site = load_site_or_exit(site_path)
    try:
        vessel_model = load_vessel(vessel)
    except ConfigError as exc:
        raise fail(exc) from None

    async def main() -> None:
        sim = await serve_site(site, vessel_model, ScaledClock(speed), seed)
        table = Table(
            "reactor",
            "device",
            "driver",
            "listens",
            title=f"{site.site}: simulated instruments ({vessel_model.name}, speed {speed:g}x)",
        )
        for s in sim.served:
            table.add_row(s.reactor, s.device, s.driver, s.where)
        out.print(table)
        out.print("ready", highlight=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await sim.close()

    asyncio.run(main())


def _value(reading: Any) -> float | None:
    return None if math.isnan(reading.value) else float(reading.value)


@devices_app.command("read")
def devices_read(
    site_path: SiteArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    reactor: Annotated[str | None, typer.Option(help="Only this reactor.")] = None,
    wait_s: Annotated[
        float, typer.Option(help="Seconds to keep trying to open each bus and line.", min=0)
    ] = 3.0,
    debug_wire: Annotated[
        bool, typer.Option("--debug-wire", help="Log the libraries' frame dumps (pymodbus).")
    ] = False,
) -> None:
    """Read every device of SITE once and print each reading with its quality.

    Buses and lines are opened concurrently; one that does not open shows why (the first and
    the latest failure) in the transports table and in its devices' reasons. Exit status 3 when
    any reading is not good.
    """
    import logging

    from drivers.catalog import Transports, open_devices
    from drivers.transport.library_logs import library_debug

    logging.basicConfig(
        level=logging.DEBUG if debug_wire else logging.WARNING,
        format="%(levelname)s %(message)s",
    )
    if debug_wire:
        library_debug(True)
    site = load_site_or_exit(site_path)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        transports = Transports.create(site.buses, site.lines)
        await transports.open(wait_s=wait_s)
        try:
            jobs: list[Coroutine[Any, Any, list[dict[str, Any]]]] = []
            for r in site.reactors:
                if reactor is not None and r.id != reactor:
                    continue
                roles = open_devices(r.devices, transports)
                jobs.extend(_read_rows(r.id, cfg, roles.devices[cfg.name]) for cfg in r.devices)
            per_device = await asyncio.gather(*jobs)
            rows = [row for device_rows in per_device for row in device_rows]
            states = transports.states()
            for row in rows:
                state = states.get(row["transport"])
                row["transport_open"] = state.connected if state else None
                row["transport_state"] = state.describe() if state else ""
            links = [
                {
                    "transport": label,
                    "port": state.port,
                    "open": state.connected,
                    "keyword": state.keyword,
                    "state": state.describe(),
                }
                for label, state in states.items()
            ]
        finally:
            await transports.close()
        return rows, links

    rows, links = asyncio.run(main())
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_tables(rows, links)
    if any(row["quality"] != "good" for row in rows):
        raise typer.Exit(3)


async def _read_rows(reactor_id: str, cfg: Any, device: Any) -> list[dict[str, Any]]:
    """Start and read one device; every failure becomes a BAD row (never an exception)."""
    from common.clock import DEFAULT_CLOCK
    from drivers.catalog import read_device
    from drivers.errors import as_driver_error
    from drivers.reading import Reading

    with contextlib.suppress(Exception):  # read() starts again and reports what is wrong
        await asyncio.wait_for(device.start(), 2.0)
    try:
        readings = await asyncio.wait_for(read_device(device), 5.0)
    except Exception as exc:  # shown as a bad row, the rest still read
        if isinstance(exc, TimeoutError):
            reason = f"timeout: {cfg.name} did not finish reading within 5 s"
        else:
            reason = as_driver_error(exc, cfg.name).reason
        now = DEFAULT_CLOCK
        readings = {"error": Reading.bad("", reason, now.monotonic(), now.utc())}
    return [
        {
            "reactor": reactor_id,
            "device": cfg.name,
            "driver": cfg.driver,
            "transport": cfg.transport_label(),
            "quantity": quantity,
            "value": _value(rd),
            "unit": rd.unit,
            "quality": rd.quality.value,
            "reason": rd.reason,
            "utc": rd.utc.isoformat(),
        }
        for quantity, rd in readings.items()
    ]


def _print_tables(rows: list[dict[str, Any]], links: list[dict[str, Any]]) -> None:
    table = Table("reactor", "device", "driver", "quantity", "value", "unit", "quality", "reason")
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        table.add_row(
            row["reactor"],
            row["device"],
            row["driver"],
            row["quantity"],
            value,
            row["unit"],
            row["quality"],
            row["reason"],
        )
    out.print(table)
    transports = Table("transport", "port", "state", title="buses and lines")
    for link in links:
        transports.add_row(link["transport"], link["port"], link["state"])
    out.print(transports)
