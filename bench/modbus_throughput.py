"""Modbus TCP throughput: driver layer vs the raw pymodbus client, same server, same run.

One pymodbus TCP server (a simulated register-map device, in a child process so that server
work does not share the clients' event loop) is polled with one FC03 read of a float32
(2 registers) per transaction by:

* ``raw``    -- ``AsyncModbusTcpClient.read_holding_registers`` + ``convert_from_registers``;
* ``hub``    -- :class:`drivers.transport.modbus.ModbusHub` (lock, unit health, error mapping);
* ``driver`` -- :class:`drivers.register_map.ModbusRegisterDevice.read` (hub + decode, scale,
  range check and a timestamped :class:`drivers.reading.Reading`).

The three run back to back in each round, their order rotating between rounds; the table reports
transactions per second per round and the median driver/raw ratio (target >= 0.8).

Run: ``python bench/modbus_throughput.py [--rounds 7] [--count 2000] [--in-process]``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.queues import Queue

from pymodbus.client import AsyncModbusTcpClient

from common.clock import SystemClock
from drivers.register_map import ModbusRegisterDevice, RegisterMap, RegisterPoint
from drivers.transport.modbus import ModbusHub
from drivers.transport.settings import ModbusTcpSettings
from simulators.devices.modbus_bus import ModbusBusSim
from simulators.devices.register_map import RegisterMapSim

UNIT = 1
MAP = RegisterMap(
    points=(RegisterPoint(name="o2_pct", address=0, dtype="float32", unit="%", valid_max=100),)
)


def _sim_bus() -> ModbusBusSim:
    return ModbusBusSim([RegisterMapSim(MAP, {"o2_pct": lambda: 1.5}, unit=UNIT)])


async def _serve(ports: Queue[int], stop_after_s: float) -> None:
    async with _sim_bus() as bus:
        ports.put(bus.port)
        await asyncio.sleep(stop_after_s)


def _serve_process(ports: Queue[int], stop_after_s: float) -> None:
    asyncio.run(_serve(ports, stop_after_s))


async def _rate(call: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(20):  # warm-up
        await call()
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return count / (time.perf_counter() - started)


async def run(port: int, rounds: int, count: int) -> list[dict[str, float]]:
    raw = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    hub = ModbusHub(ModbusTcpSettings(host="127.0.0.1", port=port, timeout_s=1.0, retries=0))
    device = ModbusRegisterDevice(hub, UNIT, MAP, clock=SystemClock())
    await raw.connect()
    await hub.connect()

    async def raw_call() -> float:
        rr = await raw.read_holding_registers(0, count=2, device_id=UNIT)
        value = raw.convert_from_registers(rr.registers, raw.DATATYPE.FLOAT32)
        assert isinstance(value, float)
        return value

    async def hub_call() -> list[int]:
        return await hub.read_holding_registers(UNIT, 0, 2)

    async def driver_call() -> float:
        reading = await device.read("o2_pct")
        assert reading.trusted
        return reading.value

    calls = {"raw": raw_call, "hub": hub_call, "driver": driver_call}
    results: list[dict[str, float]] = []
    try:
        for n in range(rounds):
            names = list(calls)
            names = names[n % 3 :] + names[: n % 3]
            results.append({name: await _rate(calls[name], count) for name in names})
    finally:
        raw.close()
        await hub.close()
    return results


def table(results: list[dict[str, float]]) -> str:
    lines = [
        "| round | raw tx/s | hub tx/s | driver tx/s | hub/raw | driver/raw |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(results, 1):
        lines.append(
            f"| {i} | {r['raw']:.0f} | {r['hub']:.0f} | {r['driver']:.0f} | "
            f"{r['hub'] / r['raw']:.3f} | {r['driver'] / r['raw']:.3f} |"
        )
    hub_median = statistics.median(r["hub"] / r["raw"] for r in results)
    driver_median = statistics.median(r["driver"] / r["raw"] for r in results)
    lines.append(f"| **median** | | | | **{hub_median:.3f}** | **{driver_median:.3f}** |")
    verdict = "meets" if driver_median >= 0.8 else "MISSES"
    lines.append("")
    lines.append(f"Median driver/raw ratio {driver_median:.3f} {verdict} the >= 0.8 target.")
    return "\n".join(lines)


async def _main_in_process(rounds: int, count: int) -> list[dict[str, float]]:
    async with _sim_bus() as bus:
        return await run(bus.port, rounds, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=2000, help="transactions per measurement")
    parser.add_argument(
        "--in-process", action="store_true", help="run the server in the clients' event loop"
    )
    args = parser.parse_args()
    if args.in_process:
        results = asyncio.run(_main_in_process(args.rounds, args.count))
        where = "the same process and event loop as the clients"
    else:
        context = multiprocessing.get_context("spawn")
        ports: Queue[int] = context.Queue()
        server = context.Process(target=_serve_process, args=(ports, 600.0), daemon=True)
        server.start()
        try:
            results = asyncio.run(run(ports.get(timeout=30), args.rounds, args.count))
        finally:
            server.terminate()
            server.join()
            ports.close()
            ports.join_thread()
        where = "a separate process"
    print(
        f"Modbus TCP, FC03 float32 (2 registers), {args.count} transactions per cell, "
        f"{args.rounds} rounds, server in {where}.\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
