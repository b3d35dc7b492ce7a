"""Per-room batched writes: the sequence point of every message.

Sends to one room queue here; a single task per active room drains the queue in
batches, stores each batch durably in one ``History.append`` call, then publishes the
new messages in sequence order and resolves the senders' futures. The ack therefore
waits for durability, one slow write serves many senders, and a room's messages are
published in exactly the order of their sequence numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from papo.hub.history import Draft, History, Stored
from papo.hub.metrics import HubMetrics

log = logging.getLogger("papo.hub")

MAX_BATCH = 256
IDLE_SECONDS = 30.0

Publish = Callable[[Sequence[Stored]], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    draft: Draft
    done: asyncio.Future[Stored]


class RoomWriters:
    def __init__(self, history: History, publish: Publish, metrics: HubMetrics) -> None:
        self._history = history
        self._publish = publish
        self._metrics = metrics
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._accepting = True
        self._busy: set[str] = set()

    def submit(self, draft: Draft) -> asyncio.Future[Stored]:
        """Queue a draft synchronously (so one sender's order is kept); await the result."""
        if not self._accepting:
            raise RuntimeError("papo is shutting down")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(draft.room)
        if queue is None:
            queue = self._queues[draft.room] = asyncio.Queue()
        queue.put_nowait(_Pending(draft, future))
        if draft.room not in self._tasks:
            self._tasks[draft.room] = asyncio.create_task(
                self._run(draft.room, queue), name=f"papo-room-writer-{draft.room}"
            )
        return future

    async def _run(self, room: str, queue: asyncio.Queue[_Pending]) -> None:
        try:
            while True:
                try:
                    first = await asyncio.wait_for(queue.get(), IDLE_SECONDS)
                except TimeoutError:
                    if queue.empty():
                        return
                    continue
                batch = [first]
                while len(batch) < MAX_BATCH and not queue.empty():
                    batch.append(queue.get_nowait())
                self._busy.add(room)
                try:
                    await self._write(room, batch)
                finally:
                    self._busy.discard(room)
        finally:
            self._tasks.pop(room, None)
            if queue.empty():
                self._queues.pop(room, None)

    async def _write(self, room: str, batch: list[_Pending]) -> None:
        try:
            stored = await self._history.append(room, [item.draft for item in batch])
        except Exception as exc:
            log.warning("history write failed", extra={"room": room, "error": repr(exc)})
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        self._metrics.history_batch.observe(len(batch))
        self._metrics.messages.inc(sum(1 for message in stored if not message.duplicate))
        unique = list({message.seq: message for message in stored}.values())
        try:
            await self._publish(unique)
        except Exception as exc:
            log.warning("publish failed after store", extra={"room": room, "error": repr(exc)})
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        for item, message in zip(batch, stored, strict=True):
            if not item.done.done():
                item.done.set_result(message)

    async def drain(self, seconds: float) -> None:
        """Stop taking drafts and wait (up to ``seconds``) for queued ones to be written."""
        self._accepting = False
        tasks = list(self._tasks.values())
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._busy or any(not queue.empty() for queue in self._queues.values()):
            if loop.time() > deadline:
                log.warning("drain timed out with unwritten messages (not acknowledged)")
                break
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
