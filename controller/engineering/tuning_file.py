"""Tuning files: a ``[tuning]`` TOML table holding :class:`ControllerTuning` per loop.

``hypoxia tune --write FILE`` writes one; ``--tuning FILE`` (tune, sweep) reads one::

    # hypoxia tune --vessel workstation-100l (relay autotune on the digital twin)
    [tuning.o2]
    kp_per_s = 0.0112
    ti_s = 365.0
    tau_c_factor = 3.0
    filter_s = 10.0

Other top-level tables in the file are ignored, so the snippet can live in a site file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from common.config_errors import ConfigError, validate_model
from controller.core.reactor import ControllerTuning


def tuning_toml(tuning: ControllerTuning, header: str = "") -> str:
    """``tuning`` as TOML text with a ``[tuning.<loop>]`` table per loop (header as comments)."""
    lines = [f"# {line}" for line in header.splitlines()]
    for loop, values in tuning.model_dump(exclude_none=True).items():
        lines.append(f"[tuning.{loop}]")
        lines.extend(f"{key} = {float(f'{value:.6g}')!r}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def load_tuning(path: Path) -> ControllerTuning:
    """Read the ``[tuning]`` table of ``path``; raise :class:`ConfigError` naming the problem."""
    source = str(path)
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    table = data.get("tuning")
    if not isinstance(table, dict):
        raise ConfigError(
            source, "tuning", "missing; allowed: a [tuning] table (o2, co2, temp, do)"
        )
    return validate_model(f"{source}: [tuning]", table, ControllerTuning)
