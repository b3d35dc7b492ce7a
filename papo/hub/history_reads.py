"""Shared history reads: what many connections ask of one room at once is read once.

When a node restarts or a network blips, every client of a room reconnects and resumes
within a second or two, and each resume asks history the same two questions: the
room's last sequence, and the messages after the one it saw. Asked one by one, 1000
clients cost the store 2000 queries while the room keeps talking, and the messages
being sent meanwhile wait behind them. ``SharedReads`` wraps a ``History`` and answers
reads that wait together with one query, in the manner of the writer's group commit:

- a read joins only a query that starts after it was asked, so it sees everything
  stored before it asked, exactly as its own query would have;
- ``after`` reads of one room share one query from the lowest sequence asked; each
  reader gets exactly what its own query would have returned, and one whose window
  the shared page does not cover is asked again in the next query;
- ``before`` reads of the same page (a room's newest messages, as every join asks for,
  or those below the same sequence) share one query of the largest limit asked; each
  reader gets the newest ``limit`` of it, exactly its own query's answer;
- ``last_seqs`` reads share one query per distinct room.

Writes and other reads go straight through. The hub wraps whatever history it is
given, so the in-memory adapter takes the same path the durable one does.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from papo.hub.history import Draft, History, Stored
from papo.hub.metrics import HubMetrics

# A shared ``after`` query reads at most this many messages past the lowest sequence
# asked (or the largest single limit, if larger): readers far ahead of the lowest one
# wait for the next query instead of making this one huge.
SHARED_PAGE = 2000


T = TypeVar("T")


@dataclass(slots=True)
class _After:
    seq: int
    limit: int
    done: asyncio.Future[list[Stored]]


@dataclass(slots=True)
class _Before:
    limit: int
    done: asyncio.Future[list[Stored]]


@dataclass(slots=True)
class _LastSeqs:
    rooms: tuple[str, ...]
    done: asyncio.Future[dict[str, int]]


_Reader = _After | _Before | _LastSeqs


class SharedReads:
    def __init__(self, history: History, metrics: HubMetrics) -> None:
        self._history = history
        self._metrics = metrics
        self._after_waiting: dict[str, list[_After]] = {}
        self._after_tasks: dict[str, asyncio.Task[None]] = {}  # per room, while readers wait
        self._before_waiting: dict[tuple[str, int | None], list[_Before]] = {}
        self._before_tasks: dict[tuple[str, int | None], asyncio.Task[None]] = {}
        self._last_waiting: list[_LastSeqs] = []
        self._last_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- straight through ------------------------------------------------------------------

    async def prepare(self) -> None:
        await self._history.prepare()

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        return await self._history.append(drafts)

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        return await self._history.edit(room, seq, sender_id, text)

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        return await self._history.delete(room, seq, sender_id)

    # --- shared ----------------------------------------------------------------------------

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        self._metrics.history_reads.labels("after").inc()
        if limit <= 0:
            return []
        done: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        self._after_waiting.setdefault(room, []).append(_After(seq, limit, done))
        if room not in self._after_tasks:
            self._after_tasks[room] = self._start(self._read_after(room), f"papo-reads-{room}")
        return await done

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        self._metrics.history_reads.labels("before").inc()
        done: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        page = (room, seq)
        self._before_waiting.setdefault(page, []).append(_Before(limit, done))
        if page not in self._before_tasks:
            self._before_tasks[page] = self._start(self._read_before(page), f"papo-reads-{room}")
        return await done

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        self._metrics.history_reads.labels("last_seq").inc(len(rooms))
        done: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._last_waiting.append(_LastSeqs(tuple(rooms), done))
        if self._last_task is None:
            self._last_task = self._start(self._read_last_seqs(), "papo-reads-last-seqs")
        return await done

    async def close(self) -> None:
        """Stop: queries in flight are cancelled, and every reader still waiting (for
        them or for the next) gets ``CancelledError`` rather than waiting forever."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        queued: list[_Reader] = list(self._last_waiting)
        for after in self._after_waiting.values():
            queued.extend(after)
        for before in self._before_waiting.values():
            queued.extend(before)
        for reader in queued:
            reader.done.cancel()

    # --- internals ---------------------------------------------------------------------------

    async def _ask(self, readers: Sequence[_Reader], query: Awaitable[T]) -> T | None:
        """The answer to ``query``, or None once ``readers`` have been given its error.
        Cancelled (the node stopping), it cancels them too: no reader is left waiting."""
        try:
            return await query
        except asyncio.CancelledError:
            for reader in readers:
                reader.done.cancel()
            raise
        except Exception as exc:
            for reader in readers:
                if not reader.done.done():
                    reader.done.set_exception(exc)
            return None

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_after(self, room: str) -> None:
        try:
            while waiting := self._after_waiting.pop(room, None):
                readers = [r for r in waiting if not r.done.done()]  # gone readers are skipped
                if readers:
                    carried = await self._answer_after(room, readers)
                    if carried:
                        self._after_waiting[room] = carried + self._after_waiting.get(room, [])
        finally:
            del self._after_tasks[room]

    async def _answer_after(self, room: str, readers: list[_After]) -> list[_After]:
        """One query for ``readers``; returns those its page does not cover."""
        base = min(r.seq for r in readers)
        widest = max(r.limit for r in readers)
        want = min(max(r.seq + r.limit for r in readers) - base, max(SHARED_PAGE, widest))
        self._metrics.history_queries.labels("after").inc()
        page = await self._ask(readers, self._history.after(room, base, want))
        if page is None:
            return []
        seqs = [message.seq for message in page]
        reached_end = len(page) < want
        carried: list[_After] = []
        for reader in readers:
            start = bisect_right(seqs, reader.seq)
            part = page[start : start + reader.limit]
            if len(part) == reader.limit or reached_end:
                if not reader.done.done():
                    reader.done.set_result(part)
            else:
                carried.append(reader)
        return carried

    async def _read_before(self, page: tuple[str, int | None]) -> None:
        room, seq = page
        try:
            while waiting := self._before_waiting.pop(page, None):
                readers = [r for r in waiting if not r.done.done()]
                if not readers:
                    continue
                self._metrics.history_queries.labels("before").inc()
                widest = max(r.limit for r in readers)
                newest = await self._ask(readers, self._history.before(room, seq, widest))
                if newest is None:
                    continue
                for reader in readers:
                    if not reader.done.done():
                        reader.done.set_result(newest[-reader.limit :] if reader.limit else [])
        finally:
            del self._before_tasks[page]

    async def _read_last_seqs(self) -> None:
        try:
            while self._last_waiting:
                waiting, self._last_waiting = self._last_waiting, []
                readers = [r for r in waiting if not r.done.done()]
                if readers:
                    await self._answer_last_seqs(readers)
        finally:
            self._last_task = None

    async def _answer_last_seqs(self, readers: list[_LastSeqs]) -> None:
        rooms = list(dict.fromkeys(room for reader in readers for room in reader.rooms))
        self._metrics.history_queries.labels("last_seq").inc(len(rooms))
        last = await self._ask(readers, self._history.last_seqs(rooms))
        if last is None:
            return
        for reader in readers:
            if not reader.done.done():
                reader.done.set_result({room: last[room] for room in reader.rooms})
