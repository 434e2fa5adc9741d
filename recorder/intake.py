"""Incoming MQTT messages -> validated store points (docs/mqtt.md), or why one is refused.

A refused message never stops the recorder: it is counted, logged with its topic and kept in the
spool's ``refused`` table. Its sequence number, when readable, still counts as seen, so a message
that is bad at the source is not asked for again and again.

A reactor's retained ``state`` message is read for two fields only (:meth:`Intake.parse_state`):
``last_seq``, the last number the controller has put in its outbox (so a lost tail of the stream
shows), and ``audit_head``, the head of the site's audit trail (kept as an external copy).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from recorder.points import Point, message_points

KINDS = ("telemetry", "event")
"""Topic kinds whose messages become points."""
STATE = "state"
"""The retained state topic kind (read for ``last_seq`` and ``audit_head``; no points)."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TRAIL = re.compile(r"^(?:[a-z0-9][a-z0-9-]{0,15})?$")

_NUMBER_SUFFIXES = ("_pct", "_c", "_lpm", "_w", "_s")
_TEXT_KEYS = frozenset({"run_id", "phase", "phase_state"})


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid message: its reactor and sequence number, and the points to store."""

    reactor: str
    seq: int
    replay: bool
    points: list[Point]


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that cannot be stored, with the reason; ``seq`` when it could be read."""

    topic: str
    reason: str
    payload: bytes
    reactor: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class StateSeen:
    """What a reactor's retained ``state`` message tells the recorder.

    Attributes:
        reactor: Reactor id (from the topic, confirmed by the payload).
        last_seq: The last sequence number the controller has put in its outbox (``None``: the
            message does not say, e.g. a controller of an earlier version).
        audit_head: (seq, hash) of the site's audit trail (``None``: not given).
        audit_trail: Which trail, when the site has one per controller partition (``""``: the
            site's one trail).
        ts_ms: When the state was taken (UTC ms).
    """

    reactor: str
    last_seq: int | None
    audit_head: tuple[int, str] | None
    ts_ms: int
    audit_trail: str = ""


@dataclass(frozen=True, slots=True)
class Pruned:
    """A controller's answer to a replay request reaching below what its outbox still holds.

    Attributes:
        reactor: Reactor id.
        from_seq / to_seq: The range that was asked for.
        pruned_through: The highest number the controller no longer holds (``from_seq`` up to
            it cannot be replayed; anything above is being replayed as usual).
        message: The controller's words (names its replay window).
    """

    reactor: str
    from_seq: int
    to_seq: int
    pruned_through: int
    message: str


def parse_replay_result(payload: bytes) -> Pruned | str:
    """A ``replay/result`` message, or why it cannot be read."""
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(message, dict) or message.get("v") != 1:
        return "not a v1 JSON object"
    reactor = message.get("reactor")
    numbers = [message.get(k) for k in ("from_seq", "to_seq", "pruned_through")]
    if not isinstance(reactor, str) or not all(_is_int(n) and n >= 0 for n in numbers):
        return "expected reactor, from_seq, to_seq and pruned_through"
    first, last, through = (int(n) for n in numbers if _is_int(n))
    return Pruned(reactor, first, last, through, str(message.get("message", "")))


def _audit_head(head: Any) -> tuple[tuple[int, str], str] | str:
    """``((seq, hash), trail)`` of a state message's ``audit_head``, or what is wrong with it."""
    seq, digest = (head.get("seq"), head.get("hash")) if isinstance(head, dict) else (0, 0)
    trail = head.get("trail", "") if isinstance(head, dict) else ""
    if not (_is_int(seq) and seq >= 0 and isinstance(digest, str) and _HEX64.match(digest)):
        return f"'audit_head' is {json.dumps(head)[:80]}, expected {{seq, hash}}"
    if not (isinstance(trail, str) and _TRAIL.match(trail)):
        return f"'audit_head.trail' is {json.dumps(trail)[:40]}, expected a partition name"
    return (seq, digest), trail


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _field_problem(key: str, value: Any) -> str | None:
    """Why a telemetry or event field has the wrong type, or ``None``."""
    if value is None:
        return None
    if key == "pump_on":
        ok = isinstance(value, bool)
        want = "true/false"
    elif key == "alarms_active" or key.endswith(_NUMBER_SUFFIXES):
        ok = _is_number(value)
        want = "a finite number"
    elif key in _TEXT_KEYS or key.endswith("_quality"):
        ok = isinstance(value, str)
        want = "a string"
    elif key == "detail":
        ok = isinstance(value, dict)
        want = "an object"
    else:
        return None
    return None if ok else f"'{key}' is {json.dumps(value)[:40]}, expected {want} or null"


class Intake:
    """Validates messages of one site under one topic root and converts them to points."""

    def __init__(self, root: str, site: str) -> None:
        self.site = site
        self._prefix = f"{root}/{site}/"

    def parse(self, topic: str, payload: bytes) -> Accepted | Refused:
        """Validate a ``telemetry`` or ``event`` message and convert it to points."""
        rest = topic.removeprefix(self._prefix)
        parts = rest.split("/")
        if rest == topic or len(parts) != 2 or parts[1] not in KINDS:
            return Refused(
                topic, f"topic is not {self._prefix}{{reactor}}/telemetry|event", payload
            )
        reactor, kind = parts
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return Refused(topic, f"not JSON: {exc}", payload, reactor)
        if not isinstance(message, dict):
            return Refused(topic, "not a JSON object", payload, reactor)
        seq = message.get("seq")
        if not _is_int(seq) or seq < 1:
            return Refused(topic, f"'seq' is {seq!r}, expected an integer >= 1", payload, reactor)
        problem = self._problem(message, reactor, kind)
        if not problem:
            try:
                points = message_points(kind, message)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problem = f"cannot convert: {exc!r}"
            else:
                return Accepted(reactor, seq, message.get("replay") is True, points)
        # the number counts as seen (not asked for again) only when surely this reactor's
        return Refused(
            topic, problem, payload, reactor, seq if message.get("reactor") == reactor else None
        )

    def parse_state(self, topic: str, payload: bytes) -> StateSeen | Refused:
        """Read ``last_seq`` and ``audit_head`` from a reactor's retained ``state`` message.

        An empty payload (a retained state being cleared) tells nothing; a state without the
        fields (an earlier controller) neither.
        """
        rest = topic.removeprefix(self._prefix)
        parts = rest.split("/")
        if rest == topic or len(parts) != 2 or parts[1] != STATE:
            return Refused(topic, f"topic is not {self._prefix}{{reactor}}/state", payload)
        reactor = parts[0]
        if not payload:
            return StateSeen(reactor, None, None, 0)
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            return Refused(topic, f"not JSON: {exc}", payload, reactor)
        if not isinstance(message, dict):
            return Refused(topic, "not a JSON object", payload, reactor)
        problem = ""
        for key, want in (("v", 1), ("site", self.site), ("reactor", reactor)):
            if message.get(key) != want:
                problem = f"'{key}' is {message.get(key)!r}, expected {want!r}"
                break
        last_seq, head, ts_ms, trail = message.get("last_seq"), message.get("audit_head"), 0, ""
        if not problem and last_seq is not None and not (_is_int(last_seq) and last_seq >= 0):
            problem = f"'last_seq' is {last_seq!r}, expected an integer >= 0"
        if not problem and head is not None:
            parsed = _audit_head(head)
            if isinstance(parsed, str):
                problem = parsed
            else:
                head, trail = parsed
        if problem:
            return Refused(topic, problem, payload, reactor)
        if _is_int(message.get("ts_ms")):
            ts_ms = message["ts_ms"]
        return StateSeen(reactor, last_seq, head, ts_ms, trail)

    def _problem(self, message: dict[str, Any], reactor: str, kind: str) -> str:
        """What is wrong with a decoded message ('' when nothing)."""
        if message.get("v") != 1:
            return f"'v' is {message.get('v')!r}, expected 1"
        ts_ms = message.get("ts_ms")
        if not _is_int(ts_ms) or ts_ms < 0:
            return f"'ts_ms' is {ts_ms!r}, expected integer milliseconds since the epoch"
        for key, want in (("site", self.site), ("reactor", reactor)):
            if message.get(key) != want:
                return f"'{key}' is {message.get(key)!r}, but the topic says '{want}'"
        if kind == "event" and not (isinstance(message.get("kind"), str) and message["kind"]):
            return f"'kind' is {message.get('kind')!r}, expected an event kind"
        for key, value in message.items():
            problem = _field_problem(key, value)
            if problem:
                return problem
        return ""
