"""Device catalogue: the instrument kinds a site file may name, and the factory that opens them.

Each entry of the site file names a ``driver`` (one kind per instrument family), the bus or line
it hangs on, its unit id and options, and the **role** it plays for its reactor. The kinds are
registered below, one line each (:mod:`drivers.registry` explains what a kind provides).
:func:`open_devices` builds the drivers of one reactor on the site's shared
:class:`~drivers.registry.Transports` (one :class:`~drivers.transport.modbus.ModbusHub` per bus,
one :class:`~drivers.transport.serial_line.SerialLine` per line) and returns a
:class:`~drivers.registry.RoleSet`: role -> handle. The controller sees roles ("o2",
"n2_mixer"), never vendors.

Adding an instrument kind: a driver file (driver class with ``read_all``, config model with
``open``), a simulator file (sim class with a ``for_config`` factory) and one line here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from common.clock import DEFAULT_CLOCK, Clock
from drivers.alicat.modbus import AlicatModbusConfig
from drivers.alicat.serial_ascii import AlicatSerialConfig
from drivers.base import Device, GasCheck
from drivers.errors import as_driver_error
from drivers.gss import GssConfig
from drivers.luminox import LuminOxConfig
from drivers.pt100 import Pt100Config
from drivers.reading import Reading
from drivers.register_map import RegisterMapConfig
from drivers.registry import (
    MIXER_ROLES,
    SENSOR_ROLES,
    DeviceConfig,
    DeviceKind,
    DeviceModel,
    GasCheckFn,
    MixerRole,
    OnBus,
    OnLine,
    OutputRole,
    ReadFn,
    Role,
    RoleSet,
    SensorRole,
    SetFn,
    Transports,
    kinds,
    register,
    registered,
    unregister,
)
from drivers.relay_board import RelayBoardConfig
from drivers.vaisala import Gmp25xConfig, HmpConfig

__all__ = [
    "MIXER_ROLES",
    "SENSOR_ROLES",
    "AlicatModbusConfig",
    "AlicatSerialConfig",
    "DeviceConfig",
    "DeviceKind",
    "DeviceModel",
    "GasCheck",
    "GasCheckFn",
    "Gmp25xConfig",
    "GssConfig",
    "HmpConfig",
    "LuminOxConfig",
    "MixerRole",
    "OnBus",
    "OnLine",
    "OutputRole",
    "Pt100Config",
    "ReadFn",
    "RegisterMapConfig",
    "RelayBoardConfig",
    "Role",
    "RoleSet",
    "SensorRole",
    "SetFn",
    "Transports",
    "device_roles",
    "ensure_gases",
    "kinds",
    "open_devices",
    "read_device",
    "register",
    "registered",
    "unregister",
]

_SIM = "simulators.devices"
register(LuminOxConfig, simulator=f"{_SIM}.luminox:LuminOxSim.for_config")
register(GssConfig, simulator=f"{_SIM}.gss:GssSim.for_config")
register(Gmp25xConfig, simulator=f"{_SIM}.vaisala:GmpSim.for_config")
register(HmpConfig, simulator=f"{_SIM}.vaisala:HmpSim.for_config")
register(Pt100Config, simulator=f"{_SIM}.pt100:Pt100Sim.for_config")
register(AlicatSerialConfig, simulator=f"{_SIM}.alicat:AlicatAsciiSim.for_config")
register(AlicatModbusConfig, simulator=f"{_SIM}.alicat:AlicatModbusSim.for_config")
register(RelayBoardConfig, simulator=f"{_SIM}.relay_board:RelayBoardSim.for_config")
register(RegisterMapConfig, simulator=f"{_SIM}.register_map:RegisterMapSim.for_config")


def device_roles(config: DeviceModel) -> list[str]:
    """The roles a device entry serves."""
    return config.served_roles()


def open_devices(
    configs: Sequence[DeviceModel], transports: Transports, clock: Clock = DEFAULT_CLOCK
) -> RoleSet:
    """Instantiate the drivers of one reactor on shared transports and bind them to roles."""
    roles = RoleSet()
    for cfg in configs:
        roles.devices[cfg.name] = cfg.open(transports, clock, roles)
    return roles


async def read_device(device: Device) -> dict[str, Reading]:
    """Everything a device can report, by quantity name (``hypoxia devices read``)."""
    return await device.read_all()


_LOG = logging.getLogger(__name__)


async def ensure_gases(roles: RoleSet, *, timeout_s: float = 5.0) -> dict[str, GasCheck]:
    """Run every flow controller's gas check of one reactor concurrently (at start).

    Each selects the site file's gas where the instrument and ``gas_select`` allow it and
    verifies it by read-back. Never raises for device faults: a failed or late check is a
    :class:`~drivers.base.GasCheck` with a reason. Logs one line per mixer (info when right,
    error otherwise), naming the device, its bus or line, and what it reports.

    Args:
        roles: The reactor's instruments (:attr:`~drivers.registry.RoleSet.gas_checks`).
        timeout_s: Longest wait per check, seconds.

    Returns:
        Mixer role -> check.
    """

    async def one(role: str, check: GasCheckFn) -> GasCheck:
        mfc = roles.mixers.get(role)
        name = str(getattr(mfc, "name", role))
        try:
            async with asyncio.timeout(timeout_s):
                return await check()
        except TimeoutError:
            reason = f"timeout: gas check of {name} did not finish within {timeout_s:g} s"
        except Exception as exc:
            reason = as_driver_error(exc, name).reason
        where = str(getattr(mfc, "where", ""))
        fs = float(getattr(mfc, "full_scale_lpm", float("nan")))
        gas = str(getattr(mfc, "expected_gas", None) or "?")
        return GasCheck(name, where, gas, None, None, False, None, fs, reason)

    items = list(roles.gas_checks.items())
    results = await asyncio.gather(*(one(role, check) for role, check in items))
    checks = dict(zip((role for role, _ in items), results, strict=True))
    for role, check in checks.items():
        if check.ok:
            _LOG.info("gas check %s: %s", role, check.describe())
        else:
            _LOG.error("gas check %s failed: %s", role, check.describe())
    return checks
