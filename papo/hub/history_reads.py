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
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from papo.hub.history import Draft, History, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import stop_tasks

# A shared ``after`` query reads at most this many messages past the lowest sequence
# asked (or the largest single limit, if larger): readers far ahead of the lowest one
# wait for the next query instead of making this one huge.
SHARED_PAGE = 2000

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class _Reader(Protocol):
    @property
    def done(self) -> asyncio.Future[Any]: ...


R = TypeVar("R", bound=_Reader)


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


Start = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


@dataclass(slots=True)
class _Line(Generic[K, R]):
    """Readers waiting per key, answered in rounds by one task per key: a round takes
    every reader waiting when it starts; ``answer`` hands back those to ask again."""

    answer: Callable[[K, list[R]], Awaitable[list[R]]]
    start: Start
    waiting: dict[K, list[R]] = field(default_factory=dict)
    tasks: dict[K, asyncio.Task[None]] = field(default_factory=dict)

    def join(self, key: K, reader: R) -> None:
        self.waiting.setdefault(key, []).append(reader)
        if key not in self.tasks:
            self.tasks[key] = self.start(self._rounds(key), f"papo-reads-{key}")

    def cancel_waiting(self) -> None:
        for readers in self.waiting.values():
            for reader in readers:
                reader.done.cancel()
        self.waiting.clear()

    async def _rounds(self, key: K) -> None:
        try:
            while waiting := self.waiting.pop(key, None):
                readers = [r for r in waiting if not r.done.done()]  # gone readers are skipped
                if readers:
                    carried = await self.answer(key, readers)
                    if carried:
                        self.waiting[key] = carried + self.waiting.get(key, [])
        finally:
            del self.tasks[key]


class SharedReads:
    def __init__(self, history: History, metrics: HubMetrics) -> None:
        self._history = history
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._after: _Line[str, _After] = _Line(self._answer_after, self._start)
        self._before: _Line[tuple[str, int | None], _Before] = _Line(
            self._answer_before, self._start
        )
        self._last: _Line[None, _LastSeqs] = _Line(self._answer_last_seqs, self._start)

    # --- straight through ------------------------------------------------------------------

    async def prepare(self) -> None:
        await self._history.prepare()

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        return await self._history.append(drafts)

    async def insert(self, messages: Sequence[Stored]) -> list[Stored | None]:
        return await self._history.insert(messages)

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
        self._after.join(room, _After(seq, limit, done))
        return await done

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        self._metrics.history_reads.labels("before").inc()
        done: asyncio.Future[list[Stored]] = asyncio.get_running_loop().create_future()
        self._before.join((room, seq), _Before(limit, done))
        return await done

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        self._metrics.history_reads.labels("last_seq").inc(len(rooms))
        done: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._last.join(None, _LastSeqs(tuple(rooms), done))
        return await done

    async def close(self) -> None:
        """Stop: queries in flight are cancelled, and every reader still waiting (for
        them or for the next) gets ``CancelledError`` rather than waiting forever."""
        await stop_tasks(self._tasks)
        self._after.cancel_waiting()
        self._before.cancel_waiting()
        self._last.cancel_waiting()

    # --- internals ---------------------------------------------------------------------------

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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

    async def _answer_after(self, room: str, readers: list[_After]) -> list[_After]:
        """One query from the lowest sequence asked; returns the readers it does not cover."""
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

    async def _answer_before(
        self, page: tuple[str, int | None], readers: list[_Before]
    ) -> list[_Before]:
        """One query of the largest limit; each reader gets the newest ``limit`` of it."""
        room, seq = page
        self._metrics.history_queries.labels("before").inc()
        widest = max(r.limit for r in readers)
        newest = await self._ask(readers, self._history.before(room, seq, widest))
        for reader in readers:
            if newest is not None and not reader.done.done():
                reader.done.set_result(newest[-reader.limit :] if reader.limit else [])
        return []

    async def _answer_last_seqs(self, _: None, readers: list[_LastSeqs]) -> list[_LastSeqs]:
        """One query per distinct room asked."""
        rooms = list(dict.fromkeys(room for reader in readers for room in reader.rooms))
        self._metrics.history_queries.labels("last_seq").inc(len(rooms))
        last = await self._ask(readers, self._history.last_seqs(rooms))
        for reader in readers:
            if last is not None and not reader.done.done():
                reader.done.set_result({room: last[room] for room in reader.rooms})
        return []
