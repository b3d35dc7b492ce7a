"""Group commit of messages: the sequence point of every message when nodes share a broker.

Every send on this node waits in one line. A single task takes everything waiting
(drafts of any rooms, up to ``MAX_BATCH``), stores it durably in one ``History.append``
call, then publishes the new messages room by room in sequence order and resolves the
senders' futures. As in a database's group commit, the ack waits for durability while
one journaled write serves every sender in every room that spoke meanwhile: 100 rooms
talking at once cost one history round trip, not 100. The line is FIFO and the store
numbers each room's drafts in the order given, so one sender's messages keep their
order and each room's messages are published in the order of their sequence numbers.

A single node numbers messages itself and stores them after fan-out (``write_behind.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from papo.hub.history import Draft, History, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import stop_task

log = logging.getLogger("papo.hub")

MAX_BATCH = 1024

Publish = Callable[[Sequence[Stored]], Awaitable[None]]


class Writer(Protocol):
    """Where sends go: ``submit`` queues one in order and resolves with it once it is
    durable; ``drain`` stops taking sends and writes what is queued."""

    def submit(self, draft: Draft) -> asyncio.Future[Stored]: ...

    def saw(self, room: str, seq: int) -> None:
        """A resuming client saw ``seq`` in ``room``."""
        ...

    def expect(self, room: str) -> None:
        """Someone here joined ``room``: its sends may follow."""
        ...

    async def drain(self, seconds: float) -> None: ...


@dataclass(slots=True)
class Pending:
    """A send waiting in a writer's line, and the future its sender awaits."""

    draft: Draft
    done: asyncio.Future[Stored]


class MessageWriter:
    def __init__(self, history: History, publish: Publish, metrics: HubMetrics) -> None:
        self._history = history
        self._publish = publish
        self._metrics = metrics
        self._waiting: deque[Pending] = deque()
        # Exists exactly while drafts wait or a write is in flight.
        self._task: asyncio.Task[None] | None = None
        self._accepting = True

    def submit(self, draft: Draft) -> asyncio.Future[Stored]:
        """Queue a draft synchronously (so one sender's order is kept); await the result."""
        if not self._accepting:
            raise RuntimeError("papo is shutting down")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._waiting.append(Pending(draft, future))
        if self._task is None:
            # Starts on the next loop turn: sends made during this one share its write.
            self._task = asyncio.create_task(self._run(), name="papo-message-writer")
        return future

    async def _run(self) -> None:
        try:
            while self._waiting:
                size = min(MAX_BATCH, len(self._waiting))
                batch = [self._waiting.popleft() for _ in range(size)]
                try:
                    await self._write(batch)
                except asyncio.CancelledError:  # drain gave up on this write: no ack
                    fail((item.done for item in batch), RuntimeError("papo is shutting down"))
                    raise
        finally:
            self._task = None  # nothing waits and nothing is being written

    async def _write(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            stored = await self._history.append([item.draft for item in batch])
        except Exception as exc:
            log.warning("history write failed", extra={"drafts": len(batch), "error": repr(exc)})
            fail((item.done for item in batch), exc)
            return
        self._metrics.history_seconds.observe(time.perf_counter() - started)
        self._metrics.history_batch.observe(len(batch))
        self._metrics.messages.inc(sum(1 for message in stored if not message.duplicate))
        unique = list({(message.room, message.seq): message for message in stored}.values())
        try:
            await self._publish(unique)
        except Exception as exc:
            log.warning("publish failed after store", extra={"error": repr(exc)})
            fail((item.done for item in batch), exc)
            return
        for item, message in zip(batch, stored, strict=True):
            if not item.done.done():
                item.done.set_result(message)

    def saw(self, room: str, seq: int) -> None:
        """Nothing to learn: here a message is stored before anyone sees its number."""

    def expect(self, room: str) -> None:
        """Nothing to prepare: the store numbers each send as it writes it."""

    async def drain(self, seconds: float) -> None:
        """Stop taking drafts and wait (up to ``seconds``) for queued ones to be written."""
        self._accepting = False
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._task is not None:
            if loop.time() > deadline:
                log.warning("drain timed out with unwritten messages (not acknowledged)")
                break
            await asyncio.sleep(0.01)
        fail((item.done for item in self._waiting), RuntimeError("papo is shutting down"))
        self._waiting.clear()
        await stop_task(task)  # a write still in flight after the deadline is abandoned, unacked


def fail(futures: Iterable[asyncio.Future[Stored]], exc: Exception) -> None:
    """Tell every sender still waiting that its send failed with ``exc``."""
    for future in futures:
        if not future.done():
            future.set_exception(exc)
