"""Start-up gating: a run starts only on instruments that read good.

Before a new run starts, every instrument its recipe needs is read (sensors for the variables the
recipe sets, and the flow of every mixer that delivers them). Anything not good refuses the start
with one line per device and its cause — unless the operator forces it, which is audited. A
resumed run starts with its outputs in the safe state and leaves it once the same readings are
trusted (:class:`~controller.service.runner.ReactorRunner` does that part each cycle).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from controller.core.recipe import Recipe
from controller.service.site import ReactorConfig
from drivers.catalog import RoleSet, device_roles, ensure_gases
from drivers.reading import Reading

SENSOR_OF_VARIABLE = {"o2": "o2", "do": "do", "co2": "co2", "temp": "temperature"}
MIXERS_OF_VARIABLE = {
    "o2": ("n2_mixer", "air_mixer", "o2_mixer"),
    "do": ("n2_mixer", "air_mixer", "o2_mixer"),
    "co2": ("co2_mixer",),
    "temp": (),
}


def controlled_variables(recipe: Recipe) -> list[str]:
    """Which of ``o2``, ``do``, ``co2``, ``temp`` some phase of ``recipe`` sets."""
    found: set[str] = set()
    for phase in recipe.phases:
        if phase.o2_pct is not None:
            found.add("do" if phase.o2_basis == "dissolved" else "o2")
        if phase.co2_pct is not None:
            found.add("co2")
        if phase.temp_c is not None:
            found.add("temp")
    return [v for v in ("o2", "do", "co2", "temp") if v in found]


def needed_sources(recipe: Recipe, roles: RoleSet) -> dict[str, Callable[[], Awaitable[Reading]]]:
    """Reading name -> read function of every instrument the recipe needs (sensors, mixer flows).

    A dissolved-O2 recipe needs the headspace O2 sensor too (the DO loop cascades onto it).
    """
    sources: dict[str, Callable[[], Awaitable[Reading]]] = {}
    variables = controlled_variables(recipe)
    if "do" in variables:
        variables = [*variables, "o2"]
    for variable in variables:
        sensor = SENSOR_OF_VARIABLE[variable]
        if sensor in roles.readers:
            sources[sensor] = roles.readers[sensor]
        for mixer_role in MIXERS_OF_VARIABLE[variable]:
            mixer = roles.mixers.get(mixer_role)
            if mixer is not None:
                sources[f"{mixer_role}_flow"] = mixer.read_flow_lpm
    return sources


@dataclass(frozen=True, slots=True)
class NotReady:
    """One instrument a run needs that does not read good."""

    reading: str
    device: str
    reason: str

    def __str__(self) -> str:
        return f"{self.reading} ({self.device}): {self.reason}"


def _device_of(cfg: ReactorConfig) -> dict[str, str]:
    """Role -> device name."""
    return {role: d.name for d in cfg.devices for role in device_roles(d)}


async def check_ready(
    cfg: ReactorConfig, roles: RoleSet, recipe: Recipe, patience_s: float = 5.0
) -> list[NotReady]:
    """Read every instrument ``recipe`` needs; return those not good after ``patience_s``.

    A reading that is not good is tried again every 0.5 s until ``patience_s`` has passed (a
    stream-mode sensor's first line, a gateway still settling).
    """
    devices = _device_of(cfg)
    sources = needed_sources(recipe, roles)
    last: dict[str, str] = {}
    pending = dict(sources)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    while pending:
        names = sorted(pending)
        results = await asyncio.gather(*(_read(pending[n]) for n in names))
        for name, (ok, reason) in zip(names, results, strict=True):
            if ok:
                del pending[name]
            else:
                last[name] = reason
        if not pending or loop.time() >= deadline:
            break
        await asyncio.sleep(0.5)
    return [
        NotReady(name, devices.get(name.removesuffix("_flow"), "?"), last[name])
        for name in sorted(pending)
    ]


async def gas_problems(roles: RoleSet, timeout_s: float = 5.0) -> list[NotReady]:
    """Each mass-flow controller's gas selected (where allowed) and verified against the site.

    A CO2 MFC left on its air calibration would deliver the wrong flow without any reading
    turning bad; so a mixer whose gas (or full scale, where it tells) differs refuses a new run.
    """
    checks = await ensure_gases(roles, timeout_s=timeout_s)
    return [
        NotReady(f"{role} gas", check.device, check.reason)
        for role, check in sorted(checks.items())
        if check.reason
    ]


async def _read(read: Callable[[], Awaitable[Reading]]) -> tuple[bool, str]:
    try:
        reading = await asyncio.wait_for(read(), timeout=2.0)
    except Exception as exc:  # any failure is a cause to report, never a crash
        return False, "no answer within 2 s" if isinstance(exc, TimeoutError) else repr(exc)
    if reading.trusted:
        return True, ""
    return False, f"{reading.quality.value}: {reading.reason or 'no value'}"
