"""MQTT messages of a reactor (docs/mqtt.md): telemetry, events and retained state.

Pure functions: the runner builds the messages of a cycle and the run journal stores them in its
outbox in the same transaction as the checkpoint; :mod:`controller.service.mqtt_link` publishes
them. The phase and event arguments are structural (:class:`PhaseTargets`, :class:`EventLike`), so
this contract depends on no controller code.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Protocol

SCHEMA_VERSION = 1


class PhaseTargets(Protocol):
    """What a message shows of the current phase (a recipe phase with overrides applied)."""

    @property
    def name(self) -> str:
        """Phase name."""
        ...

    @property
    def o2_pct(self) -> float | None:
        """O2 set point, % (gas or dissolved, per ``o2_basis``)."""
        ...

    @property
    def o2_basis(self) -> str:
        """``gas`` or ``dissolved``."""
        ...

    @property
    def o2_band_pct(self) -> float:
        """Half-width of the O2 band, %."""
        ...

    @property
    def co2_pct(self) -> float | None:
        """CO2 set point, %."""
        ...

    @property
    def temp_c(self) -> float | None:
        """Temperature set point, degC."""
        ...


class EventLike(Protocol):
    """A run event: when (run seconds), what kind, and its details."""

    @property
    def t_s(self) -> float:
        """Run time of the event, s."""
        ...

    @property
    def kind(self) -> str:
        """Event kind (``phase_started``, ``harvest_due`` …)."""
        ...

    @property
    def detail(self) -> dict[str, Any]:
        """JSON-ready details."""
        ...


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
    phase: PhaseTargets | None,
    phase_state: str,
    t_s: float,
    exposure_s: float,
    readings: dict[str, dict[str, Any]],
    actuation: dict[str, Any],
    alarms_active: int,
    lateness_ms: float | None = None,
    overruns: int = 0,
    pericellular_o2_pct: float | None = None,
) -> dict[str, Any]:
    """The ``telemetry`` message of one cycle.

    ``lateness_ms`` (how late the cycle's outputs were written after its tick) and ``overruns``
    (ticks that passed while a cycle was still running, since the controller started) say whether
    the controller keeps its period. ``pericellular_o2_pct`` is the estimated O2 at the cells,
    %-equivalent (% of 760 mmHg), of a reactor with a static culture (``None`` without one, or
    while the estimate is untrusted).
    """
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
    msg["pericellular_o2_pct"] = _num(pericellular_o2_pct)
    msg["alarms_active"] = alarms_active
    msg["lateness_ms"] = _num(lateness_ms)
    msg["overruns"] = overruns
    return msg


def event_message(
    site: str, reactor: str, seq: int, utc: datetime, run_id: str | None, event: EventLike
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
    phase: PhaseTargets | None,
    phase_state: str,
    alarms: dict[str, str],
    pending_harvests: list[str],
    last_seq: int = 0,
    audit_head: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """The retained ``state`` message.

    Args:
        site: Site id.
        reactor: Reactor id.
        utc: When the state was taken.
        run_id: The active (or last) run.
        phase: The current phase with overrides applied.
        phase_state: ISA-88 state of the phase.
        alarms: Alarm name -> state, for alarms not normal.
        pending_harvests: Harvests released and not yet confirmed.
        last_seq: The highest sequence number the controller has put in its outbox for this
            reactor (0: none yet): a recorder holding less asks for the rest (the tail of a
            stream otherwise shows no gap).
        audit_head: (seq, hash) of the site's audit trail now, for an external copy of its head.
    """
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
        "last_seq": last_seq,
        "audit_head": audit_head_field(*audit_head) if audit_head else None,
    }


def audit_head_field(seq: int, digest: str, trail: str | None = None) -> dict[str, Any]:
    """The ``audit_head`` field of a state message: the audit trail's last record and hash.

    ``trail`` names the trail when a site has several (one per controller partition,
    docs/scaling.md); it is left out for a site's one trail.
    """
    field: dict[str, Any] = {"seq": seq, "hash": digest}
    if trail is not None:
        field["trail"] = trail
    return field


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
