"""Group commit of the run journal: every reactor's cycle, few transactions, off the event loop.

Each cycle ends with its checkpoint, events and MQTT outbox messages committed in one SQLite
transaction with ``synchronous = FULL`` — one fsync. At hundreds of reactors that is hundreds of
fsyncs a second, each blocking the event loop. :class:`GroupCommitter` keeps the guarantee and
drops the cost:

* a reactor hands its serialised cycle (:class:`~controller.service.journal.CycleCommit`) to
  :meth:`GroupCommitter.commit` and **waits** until it is durable, so its checkpoint is still
  committed before its outputs move again on its next cycle (docs/reliability.md);
* cycles that arrive while a transaction is being written wait for the next one, which writes
  all of them (:meth:`~controller.service.journal.RunJournal.commit_cycles`): one transaction and
  one fsync per round for every reactor that finished meanwhile, never one per reactor;
* the writing runs in one thread of its own with its own connection (WAL lets the service's
  connection read meanwhile), so the event loop keeps cycling the other reactors while SQLite
  waits for the disk;
* the MQTT link's PUBACKs are marked in the same rounds (:meth:`GroupCommitter.mark_published`):
  marked from the event loop, each batch cost an fsync there and waited on this thread's write
  lock (SQLite's busy handler sleeps in steps of up to 100 ms) — with reactors at spread phases
  the messages come a few at a time, and those marks held the loop for a fifth of every second
  at 100 reactors.

Each cycle stays atomic (its checkpoint with its events and messages); a transaction that fails
fails every cycle in it, and each of their reactors' cycles fails as before (outputs to safe).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from controller.service.journal import CycleCommit, RunJournal


@dataclass(slots=True)
class CommitStats:
    """What the group commit has done since it started."""

    transactions: int = 0
    cycles: int = 0
    largest: int = 0
    """Most cycles written in one transaction."""


class GroupCommitter:
    """Writes reactors' cycles to the journal in shared transactions from its own thread.

    Args:
        path: The journal's SQLite file (the service's own connection stays open beside it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stats = CommitStats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-commit")
        self._journal: RunJournal | None = None
        self._pending: list[tuple[CycleCommit, asyncio.Future[None]]] = []
        self._marks: list[tuple[list[tuple[str, int, int]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the writer's own connection (in its thread: SQLite connections stay in one)."""
        loop = asyncio.get_running_loop()
        self._journal = await loop.run_in_executor(self._executor, RunJournal.open, self.path)

    async def commit(self, cycle: CycleCommit) -> None:
        """Return once ``cycle`` is durable (committed with the others of its round).

        Raises:
            Exception: The transaction holding it failed (the sqlite3 error).
        """
        if self._journal is None:
            msg = "GroupCommitter.open() was not awaited"
            raise RuntimeError(msg)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((cycle, done))
        self._start_writer()
        await done

    async def mark_published(self, acked: list[tuple[str, int, int]]) -> None:
        """Mark PUBACKs (reactor, seq, acked UTC ms) in the next round; return once durable."""
        if not acked:
            return
        if self._journal is None:
            msg = "GroupCommitter.open() was not awaited"
            raise RuntimeError(msg)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks.append((acked, done))
        self._start_writer()
        await done

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_rounds(), name="journal-commit")

    async def _write_rounds(self) -> None:
        """Write what is pending, round after round, until nothing is left."""
        journal = self._journal
        loop = asyncio.get_running_loop()
        while (self._pending or self._marks) and journal is not None:
            batch, self._pending = self._pending, []
            marks, self._marks = self._marks, []
            waiting = [done for _, done in batch] + [done for _, done in marks]
            try:
                await loop.run_in_executor(
                    self._executor,
                    journal.commit_cycles,
                    [c for c, _ in batch],
                    [m for acked, _ in marks for m in acked],
                )
            except Exception as exc:  # every waiting reactor sees its cycle fail
                for done in waiting:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.stats.transactions += 1
            self.stats.cycles += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        """Finish what is pending, close the connection and the thread."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        journal, self._journal = self._journal, None
        if journal is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, journal.close)
        self._executor.shutdown(wait=True)
