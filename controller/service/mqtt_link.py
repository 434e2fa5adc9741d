"""The controller's MQTT link (aiomqtt): outbox pump, retained state, commands, replays.

* Connects with a last will (``controller/status`` = ``lost``, retained) and publishes ``online``;
  a clean shutdown publishes ``offline``, so "lost" and "stopped" are told apart.
* Pumps the journal's outbox in sequence order; a message is marked published only after the
  broker's PUBACK (QoS 1). Nothing is lost while the broker is away: the outbox keeps growing and
  drains on reconnect.
* Publishes each reactor's retained ``state`` on connect, whenever it changes (or the audit
  trail's head moves) and once more on a clean shutdown, with the reactor's ``last_seq`` and the
  audit head (docs/mqtt.md): a recorder learns of a lost tail of the stream, and keeps an external
  copy of the audit head.
* Answers replay requests from recorders by re-publishing held messages with ``"replay": true``;
  a request reaching below what the outbox still holds is answered on ``replay/result`` with the
  highest number pruned (:meth:`RunJournal.prune_outbox`), so the recorder records those numbers
  as lost at once instead of asking into silence.
* Prunes the outbox every ``[journal] prune_every_s``: rows the broker acknowledged longer ago
  than ``replay_window_h`` (docs/reliability.md, "Replay window").
* Receives commands on ``.../{reactor}/cmd/{user}``: the user comes from the topic (the broker's
  ACL makes it authentic), the reactor from the topic; exactly one result is published on
  ``.../cmd_result/{user}`` per command, whatever arrives.

Reconnects back off (1 s doubling to 30 s) on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import aiomqtt

from common.backoff import Backoff
from controller.service.clock import CycleClock
from controller.service.commands import MAX_COMMAND_BYTES, CommandProcessor
from controller.service.commit_group import GroupCommitter
from controller.service.journal import PRUNE_MAX_ROWS, RunJournal
from controller.service.runner import ReactorRunner
from controller.service.site import JournalConfig
from telemetry.client import client_for
from telemetry.config import BrokerConfig
from telemetry.messages import audit_head_field, dumps
from telemetry.topics import Topics

log = logging.getLogger(__name__)

REPLAY_PAGE = 5_000
"""Messages read from the outbox at a time when serving a replay."""
REPLAY_MAX = 1_000_000
"""Longest range one replay request is served for."""
REPLAY_QUEUE = 200
"""Replay requests waiting at most; more are dropped (recorders repeat their requests)."""
COMMAND_SUBSCRIBE_BATCH = 100
"""Topics per SUBSCRIBE packet when a partition subscribes to its reactors' command topics."""


class MqttLink:
    """One MQTT connection for all reactors of a controller process."""

    def __init__(
        self,
        broker: BrokerConfig,
        topics: Topics,
        journal: RunJournal,
        runners: dict[str, ReactorRunner],
        processor: CommandProcessor,
        clock: CycleClock,
        journal_config: JournalConfig | None = None,
        partition: str | None = None,
    ) -> None:
        self.broker = broker
        self.topics = topics
        self.journal = journal
        self.runners = runners
        self.processor = processor
        self.clock = clock
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()  # set when the outbox has been fully published
        self.connected = asyncio.Event()
        self.connected_once = False
        self.published = 0
        self._state_sent: dict[str, tuple[int, tuple[int, str]]] = {}
        self.journal_config = journal_config or JournalConfig()
        suffix = f"-{partition}" if partition else ""
        self.client_id = f"hypoxia-controller-{topics.site}{suffix}"
        """One per controller process: a partition's own (site files with ``partition``)."""
        self.status_topic = topics.partition_status(partition)
        self.partition = partition
        """This process's partition of the site (its own audit trail and status topic)."""
        self.pruned = 0
        """Outbox rows pruned since start."""
        self.commits: GroupCommitter | None = None
        """The service's group commit: PUBACKs are marked in its rounds (None: here, at once)."""
        self._next_prune_s = clock.monotonic() + self.journal_config.prune_every_s

    def notify(self) -> None:
        """A cycle has put messages in the outbox."""
        self.idle.clear()
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected (with backoff) until ``stop`` is set; publish ``offline`` then."""
        backoff = Backoff(self.clock, initial_s=1.0, max_s=30.0)
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff.succeeded()
            except Exception as exc:  # MQTT errors, and anything unexpected: reconnect, never die
                if self.connected_once:
                    backoff.succeeded()  # a good connection was lost: start the backoff afresh
                delay = backoff.failed()
                self.connected_once = False
                self.connected.clear()
                log.warning(
                    "MQTT %s:%s: %s; retrying in %.0f s",
                    self.broker.host,
                    self.broker.port,
                    exc,
                    delay,
                )
                stopper = asyncio.ensure_future(stop.wait())
                sleeper = asyncio.ensure_future(
                    self.clock.sleep_until(self.clock.monotonic() + delay)
                )
                await asyncio.wait({stopper, sleeper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                sleeper.cancel()

    async def _session(self, stop: asyncio.Event) -> None:
        will = aiomqtt.Will(self.status_topic, b"lost", qos=1, retain=True)
        async with client_for(self.broker, self.client_id, will) as client:
            await client.publish(self.status_topic, b"online", qos=1, retain=True)
            await self._subscribe_commands(client)
            await client.subscribe(self.topics.replay_request, qos=1)
            self._state_sent.clear()
            self.connected.set()
            self.connected_once = True
            replays: asyncio.Queue[bytes] = asyncio.Queue(maxsize=REPLAY_QUEUE)
            listener = asyncio.create_task(self._listen(client, replays))
            replayer = asyncio.create_task(self._serve_replays(client, replays))
            try:
                while not stop.is_set():
                    await self._publish_states(client)
                    await self._pump(client)
                    self._maybe_prune()
                    if listener.done():
                        listener.result()  # re-raise a lost connection
                    self.wake.clear()
                    waiter = asyncio.ensure_future(self.wake.wait())
                    stopper = asyncio.ensure_future(stop.wait())
                    await asyncio.wait(
                        {waiter, stopper, listener}, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
                    stopper.cancel()
                await self._pump(client)
                # the final state: its last_seq covers everything pumped since the last change
                await self._publish_states(client, force=True)
                await client.publish(self.status_topic, b"offline", qos=1, retain=True)
            finally:
                for task in (listener, replayer):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await task
                self.connected.clear()

    async def _subscribe_commands(self, client: aiomqtt.Client) -> None:
        """The command topics this process answers.

        A site's one controller answers every command of the site (a command for a reactor it
        does not run is refused, and answered). A partition answers only its own reactors': each
        command gets exactly one answer, from the process that runs the reactor.
        """
        if self.partition is None:
            await client.subscribe(self.topics.commands, qos=1)
            return
        topics = [(self.topics.reactor_commands(rid), 1) for rid in sorted(self.runners)]
        for start in range(0, len(topics), COMMAND_SUBSCRIBE_BATCH):
            await client.subscribe(topics[start : start + COMMAND_SUBSCRIBE_BATCH])

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish every unacknowledged outbox message, oldest first, marking them on PUBACK.

        The acknowledged messages of a batch are marked in one transaction when the batch ends
        (or the connection drops): a crash in between only publishes some of them again, which
        consumers take as duplicates (docs/mqtt.md).
        """
        while batch := self.journal.unpublished(500):
            acked: list[tuple[str, int, int]] = []
            try:
                for message in batch:
                    await client.publish(message.topic, message.payload.encode(), qos=1)
                    acked_ms = int(self.clock.utc().timestamp() * 1000)
                    acked.append((message.reactor, message.seq, acked_ms))
                    self.published += 1
            finally:
                if self.commits is not None:  # with the cycles' next round, off the event loop
                    await self.commits.mark_published(acked)
                else:
                    self.journal.mark_published_many(acked)
        self.idle.set()

    def _maybe_prune(self) -> None:
        """Every ``prune_every_s``: drop acknowledged rows older than the replay window.

        In steps of at most ``PRUNE_MAX_ROWS`` rows, one per wake of the link while more are due,
        so no step holds the event loop or the journal's write lock for long.
        """
        now_s = self.clock.monotonic()
        if now_s < self._next_prune_s:
            return
        window_ms = int(self.journal_config.replay_window_h * 3_600_000)
        cutoff_ms = int(self.clock.utc().timestamp() * 1000) - window_ms
        deleted = self.journal.prune_outbox(cutoff_ms, PRUNE_MAX_ROWS)
        self.pruned += deleted
        more = deleted >= PRUNE_MAX_ROWS
        self._next_prune_s = now_s if more else now_s + self.journal_config.prune_every_s
        if deleted:
            log.debug("outbox: pruned %d messages acknowledged before the replay window", deleted)

    async def _publish_states(self, client: aiomqtt.Client, *, force: bool = False) -> None:
        """Publish each reactor's retained state if it (or the audit head) changed since sent."""
        head = self.processor.audit.head()
        for rid, runner in self.runners.items():
            sent = (runner.state_version, head)
            if force or self._state_sent.get(rid) != sent:
                message = runner.state_message()
                message["audit_head"] = audit_head_field(*head, self.partition)
                payload = dumps(message).encode()
                await client.publish(self.topics.state(rid), payload, qos=1, retain=True)
                self._state_sent[rid] = sent

    async def _listen(self, client: aiomqtt.Client, replays: asyncio.Queue[bytes]) -> None:
        """Handle commands as they come; hand replay requests to their own task.

        A long backfill must not delay an operator's abort. A full replay queue drops the request:
        recorders ask again.
        """
        async for message in client.messages:
            topic = str(message.topic)
            payload = (
                message.payload
                if isinstance(message.payload, bytes)
                else str(message.payload).encode()
            )
            try:
                if topic == self.topics.replay_request:
                    with contextlib.suppress(asyncio.QueueFull):
                        replays.put_nowait(payload)
                    continue
                parsed = self.topics.parse_command(topic)
                if parsed is not None and payload:  # empty: a retained command being cleared
                    await self._command(client, parsed[0], parsed[1], payload, message.retain)
            except aiomqtt.MqttError:
                raise  # the connection is gone: reconnect
            except Exception:  # one bad message must not end the link
                log.exception("MQTT message on %s could not be handled", topic)

    async def _command(
        self, client: aiomqtt.Client, reactor: str, user: str, payload: bytes, retained: bool
    ) -> None:
        """Answer one command message exactly once, on ``cmd_result/{user}``.

        A retained message is never executed (it would act again after every reconnect): it is
        refused, audited, and cleared from the broker.
        """
        request_id: Any = _request_id_from_text(payload)
        data: dict[str, Any] | bytes = payload
        if len(payload) <= MAX_COMMAND_BYTES:
            with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                decoded = json.loads(payload)
                if isinstance(decoded, dict):
                    request_id = bounded_request_id(decoded.pop("request_id", None))
                    data = decoded
        source, forced = f"mqtt:{user}", {"reactor": reactor, "user": user}
        if retained:
            outcome = self.processor.refuse(
                data,
                "a retained command message is never executed (publish commands without retain)",
                source,
                forced,
            )
            topic = self.topics.command(reactor, user)
            await client.publish(topic, b"", qos=1, retain=True)
            log.warning("refused and cleared a retained command on %s", topic)
        else:
            outcome = self.processor.handle(data, source=source, forced=forced)
        result = outcome.as_dict()
        reply = {"v": 1, "request_id": request_id, **result}
        await client.publish(
            self.topics.command_result(reactor, user), dumps(reply).encode(), qos=1
        )
        self.wake.set()

    async def _serve_replays(self, client: aiomqtt.Client, replays: asyncio.Queue[bytes]) -> None:
        """Serve replay requests one after another, beside the command listener."""
        while True:
            payload = await replays.get()
            try:
                await self._replay(client, payload)
            except aiomqtt.MqttError:
                return  # the connection is gone; the session reconnects
            except Exception:  # a bad request never ends replay service
                log.exception("replay request %r could not be served", payload[:200])

    async def _replay(self, client: aiomqtt.Client, payload: bytes) -> None:
        try:
            req = json.loads(payload)
            reactor, first, last = str(req["reactor"]), int(req["from_seq"]), int(req["to_seq"])
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            log.warning("ignoring malformed replay request %r", payload[:200])
            return
        first, last = max(1, first), min(last, first + REPLAY_MAX)
        pruned = self.journal.pruned_through(reactor)
        if first <= pruned and first <= last:
            await self._answer_pruned(client, reactor, first, last, pruned)
            first = pruned + 1
        while first <= last:  # in pages, so a long backfill is served whole
            page = self.journal.replay(reactor, first, last, limit=REPLAY_PAGE)
            if not page:
                return
            for held in page:
                message = json.loads(held.payload)
                message["replay"] = True
                await client.publish(held.topic, dumps(message).encode(), qos=1)
            first = page[-1].seq + 1

    async def _answer_pruned(
        self, client: aiomqtt.Client, reactor: str, first: int, last: int, pruned: int
    ) -> None:
        """Say that ``first``..``min(last, pruned)`` are no longer held (docs/mqtt.md)."""
        window_h = self.journal_config.replay_window_h
        answer = {
            "v": 1,
            "reactor": reactor,
            "from_seq": first,
            "to_seq": last,
            "pruned_through": pruned,
            "replay_window_h": window_h,
            "message": (
                f"seq {first}-{min(last, pruned)} of {reactor} are no longer held: the outbox "
                f"keeps acknowledged messages for {window_h:g} h (replay_window_h)"
            ),
        }
        await client.publish(self.topics.replay_result, dumps(answer).encode(), qos=1)
        log.warning("replay request: %s", answer["message"])


REQUEST_ID_MAX_CHARS = 128
_REQUEST_ID_KEY = re.compile(rb'"request_id"\s*:\s*')
_REQUEST_ID_SCALAR = re.compile(rb'"(?:[^"\\]|\\.){0,128}"|-?\d{1,20}')


def bounded_request_id(value: Any) -> str | int | float | bool | None:
    """A request id fit to echo: scalars as given (long strings cut), anything else as short text.

    Every command is answered exactly once with its request id, whatever the id holds — a deeply
    nested value must not keep the answer from being built.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:REQUEST_ID_MAX_CHARS]
    try:
        text = json.dumps(value, default=str)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text[:REQUEST_ID_MAX_CHARS]


def _request_id_from_text(payload: bytes) -> Any:
    """The request id of a payload that cannot be parsed (too long, or not JSON), if readable."""
    key = _REQUEST_ID_KEY.search(payload[:65536])
    if key is None:
        return None
    rest = payload[key.end() : key.end() + 4 * REQUEST_ID_MAX_CHARS]
    scalar = _REQUEST_ID_SCALAR.match(rest)
    if scalar is not None:
        with contextlib.suppress(ValueError, RecursionError):
            return bounded_request_id(json.loads(scalar.group(0)))
    # an object or array that could not be parsed: echo its opening text, bounded
    return rest.decode(errors="replace")[:REQUEST_ID_MAX_CHARS]
