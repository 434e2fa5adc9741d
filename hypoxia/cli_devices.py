"""``hypoxia simulate-devices`` and ``hypoxia devices read``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
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
) -> None:
    """Read every device of SITE once and print each reading with its quality.

    Exit status 3 when any reading is not good.
    """
    from common.clock import DEFAULT_CLOCK
    from drivers.catalog import Transports, open_devices, read_device
    from drivers.reading import Reading

    site = load_site_or_exit(site_path)

    async def main() -> list[dict[str, Any]]:
        transports = Transports.create(site.buses, site.lines)
        await transports.open(wait_s=3.0)
        rows: list[dict[str, Any]] = []
        try:
            for r in site.reactors:
                if reactor is not None and r.id != reactor:
                    continue
                roles = open_devices(r.devices, transports)
                cfg_by_name = {d.name: d for d in r.devices}
                for name, device in roles.devices.items():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(device.start(), 2.0)
                    try:
                        readings = await asyncio.wait_for(read_device(device), 5.0)
                    except Exception as exc:  # shown as a bad row, the rest still read
                        readings = {
                            "error": Reading.bad(
                                "", repr(exc), DEFAULT_CLOCK.monotonic(), DEFAULT_CLOCK.utc()
                            )
                        }
                    for quantity, rd in readings.items():
                        rows.append(
                            {
                                "reactor": r.id,
                                "device": name,
                                "driver": cfg_by_name[name].driver,
                                "quantity": quantity,
                                "value": _value(rd),
                                "unit": rd.unit,
                                "quality": rd.quality.value,
                                "reason": rd.reason,
                                "utc": rd.utc.isoformat(),
                            }
                        )
        finally:
            await transports.close()
        return rows

    rows = asyncio.run(main())
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table(
            "reactor", "device", "driver", "quantity", "value", "unit", "quality", "reason"
        )
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
    if any(row["quality"] != "good" for row in rows):
        raise typer.Exit(3)
