"""``hypoxia record``: MQTT telemetry and events -> spool -> store, nothing lost (docs/recorder.md).

Three tasks share one spool:

* **consume** - persistent MQTT session; each group of received messages is validated, its
  sequence numbers tracked, its points committed to the spool, and only then acknowledged;
* **write** - moves spooled points to the store in order, in batches of ``batch_size`` points or
  every ``batch_interval_s``; while the store is down it retries with backoff and the spool grows
  (past ``max_spool_mb`` the consumer stops acknowledging, so the broker keeps the messages);
* **replay** - asks the controller for missing sequence numbers (``gap_detection``), including
  the tail of a stream that the reactor's retained ``state`` (``last_seq``) shows is missing.

The retained ``state`` messages also carry the head of the site's audit trail; the recorder keeps
every head it sees in its spool (an external copy ``hypoxia audit verify`` compares the trail
with) and logs an error when a head goes back (the trail was shortened or replaced).

No wall-clock reads: the loop clock times batches, connections and replay requests; retry delays
come from :class:`common.backoff.Backoff` (monotonic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import aiomqtt

from common.backoff import Backoff
from common.clock import SystemClock
from common.config_errors import ConfigError
from common.names import bounded_name
from recorder.gaps import GapTracker, Range, ReplayPolicy
from recorder.intake import STATE, Accepted, Intake, Refused, StateSeen, parse_replay_result
from recorder.link import ack, payload_bytes, persistent_client, state_subscriptions, subscriptions
from recorder.spool import HeadSeen, Spool, SpoolBatch, spool_path
from recorder.stores import Store, StoreRefused, StoreUnavailable, make_store
from telemetry.config import BrokerConfig, RecorderConfig
from telemetry.credentials import as_account
from telemetry.topics import Topics

log = logging.getLogger(__name__)

MAX_GROUP = 200
"""Messages committed to the spool in one transaction at most."""
REPLAY_TICK_S = 0.25
"""How often the replay task looks for due requests, s."""
STABLE_CONNECTION_S = 10.0
"""A connection that lasted this long resets the reconnect backoff, s."""
FINAL_FLUSH_S = 5.0
"""On shutdown, time allowed to write what is spooled, s (the rest waits in the spool)."""


@dataclass(slots=True)
class RecorderStats:
    """Counters since start (logged every ``report_every_s``)."""

    received: int = 0
    refused: int = 0
    duplicates: int = 0
    points_written: int = 0
    store_writes: int = 0
    store_refused: int = 0
    store_failures: int = 0
    replay_requests: int = 0
    lost: int = 0
    connects: int = 0
    states: int = 0
    tails: int = 0


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


class RecordedSite(Protocol):
    """What a recorder needs of the site file (the controller's ``SiteConfig`` has it)."""

    @property
    def site(self) -> str:
        """Site name (the topic level under the root)."""
        ...

    @property
    def broker(self) -> BrokerConfig:
        """The ``[broker]`` section."""
        ...

    @property
    def recorder(self) -> RecorderConfig:
        """The ``[recorder]`` section."""
        ...

    @property
    def reactors(self) -> Sequence[_HasId]:
        """The site's reactors (their ids)."""
        ...

    @property
    def state_dir(self) -> Path:
        """Where spools and SQLite stores live."""
        ...


def default_client_id(site: str, reactors: Sequence[str]) -> str:
    """The recorder's MQTT client id when the site file names none.

    ``hypoxia-recorder-{site}`` for every reactor (``*``); for a partition its reactor ids are
    added while the id stays within 64 characters (``hypoxia-recorder-sim-ws1_ws2``), else their
    count and a hash (``hypoxia-recorder-sim-100r-3f9a1c07b2``): bounded, the same for the same
    reactors after every restart (the persistent session and the spool are found again), and
    different for different partitions (recorders of one site never share a session).
    """
    base = f"hypoxia-recorder-{site}"
    return base if "*" in reactors else bounded_name(base, reactors)


def _ranges(ranges: Sequence[Range]) -> str:
    return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


class Recorder:
    """One recorder: the reactors it owns, its MQTT session, its spool, its store.

    Args:
        site: The loaded site file (``broker``, ``recorder``, ``state_dir``).
        reactors: Reactor ids to record instead of ``recorder.reactors`` (``["*"]``: all).
        client_id: MQTT client id instead of ``recorder.client_id`` (each member of a
            ``share_group`` needs its own; ``hypoxia record --client-id``).
        policy: When to ask for replays (defaults: :class:`~recorder.gaps.ReplayPolicy`).
        store_retry_max_s: Longest wait between store retries, s.
        reconnect_max_s: Longest wait between broker reconnects, s.
        report_every_s: Period of the status line in the log, s.

    Raises:
        ConfigError: An unknown reactor, an unset ``token_env``, or a share-group member
            without a client id of its own.
    """

    def __init__(
        self,
        site: RecordedSite,
        *,
        reactors: list[str] | None = None,
        client_id: str | None = None,
        policy: ReplayPolicy | None = None,
        store_retry_max_s: float = 30.0,
        reconnect_max_s: float = 30.0,
        report_every_s: float = 60.0,
    ) -> None:
        self.site = site
        self.config = site.recorder
        self.broker = as_account(site.broker or BrokerConfig(), site.state_dir, "recorder")
        self.reactors = reactors or self.config.reactors
        # a partition gets its own session and spool: recorders of one site never share an id
        self.client_id = (
            client_id or self.config.client_id or default_client_id(site.site, self.reactors)
        )
        group = self.config.share_group
        if group is not None and client_id is None and self.config.client_id is None:
            raise ConfigError(
                "site file",
                "recorder.client_id",
                f"not set, but every member of share group '{group}' needs a client id of its "
                "own (two members with one id would take each other's session over); allowed: "
                "`hypoxia record SITE --client-id NAME` per member, or recorder.client_id in "
                "each member's site file",
            )
        known = [r.id for r in site.reactors]
        unknown = [r for r in self.reactors if r != "*" and r not in known]
        if unknown:
            raise ConfigError(
                "site file",
                "recorder.reactors",
                f"unknown reactor(s) {', '.join(unknown)} (known: {', '.join(known)}, or *)",
            )
        self.topics = subscriptions(self.broker.root, site.site, self.reactors, group)
        self.state_topics = state_subscriptions(self.broker.root, site.site, self.reactors)
        self.replay_topic = Topics(self.broker.root, site.site).replay_request
        self.replay_result_topic = Topics(self.broker.root, site.site).replay_result
        if self.config.gap_detection:  # the controller's word on numbers it no longer holds
            self.state_topics.append(self.replay_result_topic)
        self.intake = Intake(self.broker.root, site.site)
        self.store: Store = make_store(self.config.store, site.state_dir)
        path = spool_path(site.state_dir, self.client_id)  # a bounded file name
        try:
            self.spool = Spool(path)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                "site file",
                "state_dir",
                f"the recorder's spool {path} cannot be opened: {exc} (allowed: a state_dir "
                "the recorder may create and write files in)",
            ) from None
        self.tracker = (
            GapTracker(self.spool.load_states(), policy or ReplayPolicy(), self.config.backfill)
            if self.config.gap_detection
            else None
        )
        self.stats = RecorderStats()
        self.subscribed = asyncio.Event()
        """Set while connected and subscribed."""
        self._store_retry_max_s = store_retry_max_s
        self._reconnect_max_s = reconnect_max_s
        self._report_every_s = report_every_s
        self._client: aiomqtt.Client | None = None
        self._spooled = asyncio.Event()
        self._drained = asyncio.Event()
        self._store_open = False

    @property
    def spool_limit_bytes(self) -> float:
        """``max_spool_mb`` in bytes."""
        return self.config.max_spool_mb * 1e6

    async def run(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set, then write what the store takes in a few seconds."""
        log.info(
            "recorder %s: broker %s:%d, topics %s; store: %s; spool: %s (%d points waiting)",
            self.client_id,
            self.broker.host,
            self.broker.port,
            ", ".join(self.topics),
            self.store.description,
            self.spool.path,
            self.spool.points,
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                running = [
                    tasks.create_task(self._consume_forever()),
                    tasks.create_task(self._write_forever()),
                ]
                if self.tracker is not None:
                    running.append(tasks.create_task(self._replay_forever(self.tracker)))
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(self._report_every_s):
                            await stop.wait()
                    except TimeoutError:
                        self._report()
                for task in running:
                    task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_FLUSH_S):
                    await self._drain(retry=False)
        finally:
            await self.store.close()
            self.spool.close()
            self._report()

    def _report(self) -> None:
        missing = self.tracker.missing() if self.tracker else {}
        log.info(
            "recorder %s: %s; spooled %d points (%.2f MB)%s",
            self.client_id,
            ", ".join(f"{k} {v}" for k, v in asdict(self.stats).items()),
            self.spool.points,
            self.spool.bytes / 1e6,
            "".join(f"; {r} missing {_ranges(g)}" for r, g in missing.items()),
        )

    # ---- consume ------------------------------------------------------------------------------

    async def _consume_forever(self) -> None:
        backoff = Backoff(SystemClock(), 0.5, self._reconnect_max_s)
        loop = asyncio.get_running_loop()
        while True:
            client = persistent_client(self.broker, self.client_id)
            since = loop.time()
            problem = "disconnected"
            try:
                async with client:
                    self.stats.connects += 1
                    for topic in self.topics + self.state_topics:
                        await client.subscribe(topic, qos=1)
                    log.info("connected to %s:%d, subscribed", self.broker.host, self.broker.port)
                    self._client = client
                    self.subscribed.set()
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                problem = str(exc)
            finally:
                self._client = None
                self.subscribed.clear()
            if loop.time() - since > STABLE_CONNECTION_S:
                backoff.succeeded()
            delay = backoff.failed()
            log.warning("MQTT: %s; reconnecting in %.1f s", problem, delay)
            await asyncio.sleep(delay)

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        while True:
            group = [await anext(messages)]
            while len(messages) and len(group) < MAX_GROUP:
                group.append(await anext(messages))
            await self._room_in_spool()
            try:
                self._record(group)
            except sqlite3.Error as exc:
                # nothing acknowledged: the broker sends the group again after the reconnect
                msg = f"spool {self.spool.path}: {exc}"
                raise aiomqtt.MqttError(msg) from exc
            for message in group:
                ack(client, message)
            self._spooled.set()

    def _record(self, group: list[aiomqtt.Message]) -> None:
        """Validate, track and spool a group of messages (one transaction)."""
        items: list[Accepted | Refused] = []
        heads: list[HeadSeen] = []
        lost: dict[str, list[Range]] = {}
        for message in group:
            topic = str(message.topic)
            if topic == self.replay_result_topic:
                self._pruned(payload_bytes(message), lost)
                continue
            if topic.endswith("/" + STATE):
                seen = self.intake.parse_state(topic, payload_bytes(message))
                if isinstance(seen, StateSeen):
                    self._state(seen, heads)
                    continue
                item: Accepted | Refused = seen
            else:
                self.stats.received += 1
                item = self.intake.parse(topic, payload_bytes(message))
            if isinstance(item, Refused):
                self.stats.refused += 1
                log.warning("refused message on %s: %s", item.topic, item.reason)
            tracker, reactor, seq = self.tracker, item.reactor, item.seq
            if (
                tracker
                and reactor is not None
                and seq is not None
                and not tracker.observe(reactor, seq)
            ):
                self.stats.duplicates += 1
            items.append(item)
        self._commit(items, lost or None, heads)

    def _pruned(self, payload: bytes, lost: dict[str, list[Range]]) -> None:
        """A controller says numbers asked for are no longer held: record them as lost now."""
        answer = parse_replay_result(payload)
        if isinstance(answer, str):
            log.warning("unreadable replay result on %s: %s", self.replay_result_topic, answer)
            return
        if self.tracker is None:
            return
        hi = min(answer.to_seq, answer.pruned_through)
        given_up = self.tracker.give_up(answer.reactor, answer.from_seq, hi)
        if not given_up:
            return  # another recorder's request, or numbers this one has meanwhile
        lost.setdefault(answer.reactor, []).extend(given_up)
        self.stats.lost += sum(b - a + 1 for a, b in given_up)
        log.error(
            "%s: seq %s cannot be replayed: %s (kept in the spool's 'lost' table)",
            answer.reactor,
            _ranges(given_up),
            answer.message or f"pruned through seq {answer.pruned_through}",
        )

    def _state(self, seen: StateSeen, heads: list[HeadSeen]) -> None:
        """A reactor's retained state: the tail it announces, and the audit head it carries."""
        self.stats.states += 1
        tracker = self.tracker
        if tracker is not None and seen.last_seq is not None:
            held = tracker.states.get(seen.reactor)
            if tracker.announce(seen.reactor, seen.last_seq) and held is not None:
                tail = [g for g in held.missing() if g[1] == seen.last_seq]
                if tail:
                    self.stats.tails += 1
                    log.info(
                        "%s: the controller has published up to seq %d; seq %s not received yet",
                        seen.reactor,
                        seen.last_seq,
                        _ranges(tail),
                    )
        if seen.audit_head is None:
            return
        seq, digest = seen.audit_head
        trail = seen.audit_trail  # a partitioned site has one trail per controller process
        if self.spool.knows_head(seq, digest) or any(
            (h.seq, h.hash) == (seq, digest) for h in heads
        ):
            return
        top = self.spool.audit_head(trail)
        if top is not None and (seq < top[0] or (seq == top[0] and digest != top[1])):
            log.error(
                "audit head of %s went from record %d (%s…) to record %d (%s…): the "
                "controller's audit trail was shortened, rewritten or replaced "
                "(check with `hypoxia audit verify`)",
                seen.reactor,
                top[0],
                top[1][:12],
                seq,
                digest[:12],
            )
        heads.append(HeadSeen(seq, digest, seen.reactor, seen.ts_ms, trail))

    def _commit(
        self,
        items: Sequence[Accepted | Refused],
        lost: dict[str, list[Range]] | None = None,
        heads: Sequence[HeadSeen] = (),
    ) -> None:
        states = {}
        if self.tracker is not None:
            states = {r: self.tracker.states[r] for r in self.tracker.dirty}
        self.spool.commit(items, states, lost, heads)
        if self.tracker is not None:
            self.tracker.dirty.clear()

    async def _room_in_spool(self) -> None:
        """Wait, acknowledging nothing, while the spool is over ``max_spool_mb``."""
        if self.spool.bytes < self.spool_limit_bytes:
            return
        log.warning(
            "spool full (%.3g MB >= max_spool_mb %.3g): acknowledging nothing until the store "
            "takes points; the broker keeps the messages",
            self.spool.bytes / 1e6,
            self.config.max_spool_mb,
        )
        while self.spool.bytes >= self.spool_limit_bytes:
            self._drained.clear()
            await self._drained.wait()
        log.info("spool below its limit again: consuming")

    # ---- write --------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.spool.rows:
                self._spooled.clear()
                await self._spooled.wait()
            # a batch is due when full, or batch_interval_s after the writer started waiting
            deadline = loop.time() + self.config.batch_interval_s
            while self.spool.points < self.config.batch_size and loop.time() < deadline:
                self._spooled.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._spooled.wait()
            await self._drain(retry=True)

    async def _drain(self, *, retry: bool) -> None:
        """Write spooled points in order.

        With ``retry`` (running): one batch, retried until the store takes it, then further
        batches while full ones wait (a partial tail waits for the next interval). Without
        (shutdown): everything, stopping at the first failure.
        """
        size = self.config.batch_size
        backoff = Backoff(SystemClock(), 0.2, self._store_retry_max_s)
        down = False
        first = True
        while (batch := self.spool.batch(size)) is not None:
            if retry and not first and len(batch.points) < size:
                return
            try:
                await self._write(batch)
            except StoreUnavailable as exc:
                self.stats.store_failures += 1
                if not retry:
                    log.warning(
                        "store unavailable at shutdown (%s); %d points stay spooled",
                        exc,
                        self.spool.points,
                    )
                    return
                delay = backoff.failed()
                (log.debug if down else log.warning)(
                    "store unavailable: %s; %d points spooled, retry in %.1f s",
                    exc,
                    self.spool.points,
                    delay,
                )
                down = True
                await asyncio.sleep(delay)
                continue
            if down:
                log.info("store back; %d points still spooled", self.spool.points)
                down = False
            backoff.succeeded()
            first = False

    async def _write(self, batch: SpoolBatch) -> None:
        if not self._store_open:
            await self.store.open()
            self._store_open = True
        try:
            self.stats.store_writes += 1
            await self.store.write(batch.points)
        except StoreRefused as exc:
            log.warning("store refused a batch (%s); writing its messages one by one", exc)
            for row in batch.rows:
                try:
                    await self.store.write(row[1])
                except StoreRefused as one:
                    self.stats.store_refused += 1
                    log.error("store refused points (kept in the spool's 'refused' table): %s", one)
                    self.spool.refuse_rows([row], str(one))
        self.spool.remove(batch)
        self.stats.points_written += len(batch.points)
        self._drained.set()

    # ---- replay -------------------------------------------------------------------------------

    async def _replay_forever(self, tracker: GapTracker) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REPLAY_TICK_S)
            client = self._client
            if client is None:
                continue
            requests, lost = tracker.due(loop.time())
            if lost:
                self._commit([], lost)
                for reactor, ranges in lost.items():
                    self.stats.lost += sum(hi - lo + 1 for lo, hi in ranges)
                    log.error(
                        "%s: gave up on seq %s after %d replay requests (kept in the spool's "
                        "'lost' table)",
                        reactor,
                        _ranges(ranges),
                        tracker.policy.max_requests,
                    )
            for request in requests:
                try:
                    await client.publish(
                        self.replay_topic, json.dumps(request.payload()), qos=1, timeout=5.0
                    )
                except aiomqtt.MqttError as exc:
                    log.warning("replay request not sent (%s); will ask again", exc)
                    break
                self.stats.replay_requests += 1
                log.info(
                    "%s: asked for replay of seq %d-%d",
                    request.reactor,
                    request.from_seq,
                    request.to_seq,
                )
