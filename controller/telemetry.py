"""MQTT messages of a reactor (docs/mqtt.md): topics, telemetry, events and retained state.

Pure functions: the runner builds the messages of a cycle and the run journal stores them in its
outbox in the same transaction as the checkpoint; :mod:`controller.mqtt_link` publishes them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.recipe import Phase
from controller.recipe_engine import Event

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one site under a root (``hypoxia/v1``)."""

    root: str
    site: str

    @property
    def base(self) -> str:
        """``{root}/{site}``."""
        return f"{self.root}/{self.site}"

    @property
    def controller_status(self) -> str:
        """Retained ``online`` / ``offline`` / ``lost`` (last will)."""
        return f"{self.base}/controller/status"

    @property
    def replay_request(self) -> str:
        """Where recorders ask for missing sequence numbers."""
        return f"{self.base}/replay/request"

    @property
    def commands(self) -> str:
        """Subscription for every reactor's command topic."""
        return f"{self.base}/+/cmd/+"

    def telemetry(self, reactor: str) -> str:
        """Per-cycle telemetry of a reactor."""
        return f"{self.base}/{reactor}/telemetry"

    def event(self, reactor: str) -> str:
        """Events of a reactor."""
        return f"{self.base}/{reactor}/event"

    def state(self, reactor: str) -> str:
        """Retained state of a reactor."""
        return f"{self.base}/{reactor}/state"

    def command_result(self, reactor: str, user: str) -> str:
        """Where the answer to ``user``'s command goes."""
        return f"{self.base}/{reactor}/cmd_result/{user}"

    def parse_command(self, topic: str) -> tuple[str, str] | None:
        """(reactor, user) of a command topic, or ``None``."""
        parts = topic.removeprefix(self.base + "/").split("/")
        if len(parts) == 3 and parts[1] == "cmd" and parts[0] and parts[2]:
            return parts[0], parts[2]
        return None


def ts_ms(utc: datetime) -> int:
    """UTC milliseconds since the epoch."""
    return round(utc.timestamp() * 1000)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def telemetry_message(
    site: str,
    reactor: str,
    seq: int,
    utc: datetime,
    run_id: str | None,
    phase: Phase | None,
    phase_state: str,
    t_s: float,
    exposure_s: float,
    readings: dict[str, dict[str, Any]],
    actuation: dict[str, Any],
    alarms_active: int,
) -> dict[str, Any]:
    """The ``telemetry`` message of one cycle."""
    msg: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "seq": seq,
        "ts_ms": ts_ms(utc),
        "site": site,
        "reactor": reactor,
        "run_id": run_id,
        "phase": phase.name if phase else None,
        "phase_state": phase_state,
        "t_s": t_s,
        "exposure_s": exposure_s,
    }
    for role, key in (("o2", "o2"), ("co2", "co2"), ("temperature", "temp"), ("do", "do")):
        reading = readings.get(role)
        unit_key = "temp_c" if key == "temp" else f"{key}_pct"
        msg[unit_key] = _num(reading["value"]) if reading else None
        msg[f"{key}_quality"] = reading["quality"] if reading else None
    msg["o2_sp_pct"] = phase.o2_pct if phase and phase.o2_basis == "gas" else None
    msg["do_sp_pct"] = phase.o2_pct if phase and phase.o2_basis == "dissolved" else None
    msg["o2_band_pct"] = phase.o2_band_pct if phase and phase.o2_pct is not None else None
    msg["co2_sp_pct"] = phase.co2_pct if phase else None
    msg["temp_sp_c"] = phase.temp_c if phase else None
    for key in ("n2_lpm", "air_lpm", "o2_lpm", "co2_lpm", "heater_w"):
        msg[key] = _num(actuation.get(key))
    msg["pump_on"] = bool(actuation.get("pump_on", False))
    msg["alarms_active"] = alarms_active
    return msg


def event_message(
    site: str, reactor: str, seq: int, utc: datetime, run_id: str | None, event: Event
) -> dict[str, Any]:
    """An ``event`` message."""
    return {
        "v": SCHEMA_VERSION,
        "seq": seq,
        "ts_ms": ts_ms(utc),
        "site": site,
        "reactor": reactor,
        "run_id": run_id,
        "t_s": event.t_s,
        "kind": event.kind,
        "detail": event.detail,
    }


def state_message(
    site: str,
    reactor: str,
    utc: datetime,
    run_id: str | None,
    phase: Phase | None,
    phase_state: str,
    alarms: dict[str, str],
    pending_harvests: list[str],
) -> dict[str, Any]:
    """The retained ``state`` message."""
    return {
        "v": SCHEMA_VERSION,
        "ts_ms": ts_ms(utc),
        "site": site,
        "reactor": reactor,
        "run_id": run_id,
        "phase": phase.name if phase else None,
        "phase_state": phase_state,
        "setpoints": {
            "o2_pct": phase.o2_pct if phase else None,
            "co2_pct": phase.co2_pct if phase else None,
            "temp_c": phase.temp_c if phase else None,
        },
        "alarms": alarms,
        "pending_harvests": pending_harvests,
    }


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps(message: dict[str, Any]) -> str:
    """Compact, strict JSON: non-finite numbers become ``null``."""
    return json.dumps(json_safe(message), separators=(",", ":"), default=str, allow_nan=False)
