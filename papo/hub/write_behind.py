"""Number, fan out, then store: the message path of a single node.

On one node (an ``ordered`` broker) nothing else numbers the node's rooms, so the node
numbers each message itself, fans it out at once and stores it right after, in a group
commit of everything numbered meanwhile; the sender's ack still waits for durability.
Waiting for the store before fan-out put one journaled write into every recipient's
latency (2.6-3.5 ms after a pause on the store measured in docs/benchmarks-log.md, tens of
milliseconds once it is busy); here the store's time is only in the sender's ack.

What the room sees and what it can rely on:
- Every reader sees staged messages: ``StagedHistory`` merges what is numbered but not
  yet stored into every answer of the store (joins, resumes, history pages, gap fills),
  so a resume never misses a message that was fanned out and not yet written.
- A retried send (same client id) is recognised before fan-out: the node remembers the
  recent draft keys of each room it numbers, seeded from the store the first time it
  numbers the room. A retry older than that memory is caught by the store's index at
  write time: its sender is acknowledged with the earlier message and the new number
  stays unused (history reads step over it).
- If a write fails, its messages stay staged and are written again with backoff; their
  senders are told to retry with the same client id, and a retry is acknowledged once
  the write lands. Past ``MAX_STAGED`` messages waiting, new sends are refused before
  they are numbered.
- An edit or delete of a staged message waits for its write, at most ``STORED_WAIT``
  and never past a failed write: it runs inside its connection's read loop, and a
  store outage must not hold up every later frame of that connection.
- The price: a message is seen before it is durable. If the process dies before its
  write (a window of one store write), the room saw a message that history will not
  have; it was never acknowledged, so its sender's client sends it again.

Several nodes (a shared broker) number through the store instead (``writer.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice

from papo.hub.history import Draft, History, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import stop_task
from papo.hub.writer import MAX_BATCH, Pending, fail

log = logging.getLogger("papo.hub")

SEED_KEYS = 500  # draft keys read from the store when a room is first numbered
KEEP_KEYS = 1000  # draft keys remembered per room
MAX_ROOMS = 100_000  # rooms whose numbering is remembered (those with staged ones stay)
MAX_STAGED = 10_000  # messages fanned out and not yet stored, node-wide
WRITE_GAP = 0.01  # seconds between the starts of two writes while messages keep coming
STORED_WAIT = 5.0  # seconds an edit or delete of a staged message waits for its write
RETRY_FIRST = 0.1
RETRY_MAX = 2.0

SenderKey = tuple[str, str]  # (sender id, client id) within a room
# Fans messages out to this node's listeners before returning (no broker in between).
HandOut = Callable[[Sequence[Stored]], None]


class NotStoredYet(RuntimeError):
    """The message reached the room but its write failed; it is written again."""


class HistoryBehind(RuntimeError):
    """Too many messages wait for the store; new sends are refused until it catches up."""


@dataclass(slots=True)
class _Waiter:
    done: asyncio.Future[Stored]
    duplicate: bool


@dataclass(slots=True)
class _Staged:
    message: Stored
    waiters: list[_Waiter]
    written: asyncio.Future[None] | None = None  # made only for an edit waiting for the write


@dataclass(slots=True)
class _Room:
    last: int  # the highest number handed out (or that clients say they saw)
    used: int  # the highest number of a message this node stored, staged or learned
    # (sender id, client id) -> (number, time) of recent sends. Tuples of strings and
    # numbers only, which the cycle collector stops tracking: 100,000 remembered sends
    # would otherwise lengthen every full collection, which stops the loop.
    keys: OrderedDict[SenderKey, tuple[int, float]] = field(default_factory=OrderedDict)
    staged: dict[int, _Staged] = field(default_factory=dict)  # in number order

    def remember(self, message: Stored) -> None:
        key = (message.sender_id, message.client_id)
        self.keys[key] = (message.seq, message.ts)
        self.keys.move_to_end(key)
        if len(self.keys) > KEEP_KEYS:
            self.keys.popitem(last=False)


class WriteBehind:
    def __init__(self, store: History, publish: HandOut, metrics: HubMetrics) -> None:
        self._store = store
        self._publish = publish
        self._metrics = metrics
        self._rooms: OrderedDict[str, _Room] = OrderedDict()  # least recently numbered first
        self._line: deque[_Staged] = deque()  # numbered and not yet stored, in order
        self._storing: asyncio.Task[None] | None = None
        self._seeding: dict[str, list[Pending]] = {}  # rooms being learned: their drafts
        self._floors: dict[str, int] = {}  # numbers clients saw in rooms not learned yet
        self._seeds: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._last_write = 0.0
        self.view = StagedHistory(store, self)

    def submit(self, draft: Draft) -> asyncio.Future[Stored]:
        """Number and fan out ``draft`` now (its room learned) or once its room is
        learned; the future is its ack, resolved once it is stored."""
        if not self._accepting:
            raise RuntimeError("papo is shutting down")
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        pending = Pending(draft, future)
        if draft.room in self._rooms:
            self._number([pending])
        else:
            self._learn(draft.room).append(pending)
        return future

    def expect(self, room: str) -> None:
        """Learn a room when someone here joins it, not at its first send: that send
        would otherwise wait for a store read, and at a start (a node restarting with
        its rooms busy) every room's first messages would."""
        if self._accepting and room not in self._rooms:
            self._learn(room)

    def saw(self, room: str, seq: int) -> None:
        """A client says it saw ``seq`` in ``room`` (its resume): never number a message
        at or below it again. Numbers past the store's last can only be messages shown
        and then lost when a node died before storing them; the node that follows
        starts numbering from the store, and without this would give a lost message's
        number to the next one, which a client that saw the lost one would skip.
        At most ``MAX_STAGED`` past what the room holds is believed: that many could
        have been lost, and a member must not push a room's numbers further."""
        state = self._rooms.get(room)
        if state is not None:
            state.last = max(state.last, min(seq, state.used + MAX_STAGED))
            return
        if len(self._floors) >= MAX_ROOMS:
            self._floors.clear()
        self._floors[room] = max(self._floors.get(room, 0), seq)

    def staged(self, room: str) -> list[Stored]:
        state = self._rooms.get(room)
        return [] if state is None else [entry.message for entry in state.staged.values()]

    async def until_stored(self, room: str, seq: int) -> None:
        """Return once ``seq`` is stored (at once if it is not staged); raise
        ``NotStoredYet`` if its next write fails or ``STORED_WAIT`` passes first."""
        state = self._rooms.get(room)
        entry = None if state is None else state.staged.get(seq)
        if entry is None:
            return
        written = entry.written
        if written is None:
            written = entry.written = asyncio.get_running_loop().create_future()
            written.add_done_callback(_collect)
        done, _ = await asyncio.wait({written}, timeout=STORED_WAIT)
        if not done:
            raise NotStoredYet(f"the message was not stored within {STORED_WAIT:g} s")
        written.result()

    async def drain(self, seconds: float) -> None:
        """Stop taking drafts; wait (up to ``seconds``) for staged ones to be stored."""
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._storing is not None or self._seeds:
            if loop.time() > deadline:
                log.warning("drain timed out with unstored messages (not acknowledged)")
                break
            await asyncio.sleep(0.01)
        shutting = RuntimeError("papo is shutting down")
        fail((w.done for entry in self._line for w in entry.waiters), shutting)
        for task in (self._storing, *self._seeds):  # a seed's drafts are failed as it stops
            if task is not None:
                await stop_task(task)

    # --- numbering and fan-out ---------------------------------------------------------------

    def _number(self, batch: list[Pending]) -> None:
        now = time.time()
        fresh: list[Stored] = []
        for pending in batch:
            draft = pending.draft
            room = self._rooms[draft.room]
            self._rooms.move_to_end(draft.room)
            known = room.keys.get((draft.sender_id, draft.client_id))
            if known is not None:  # a retried send: never numbered or shown twice
                entry = room.staged.get(known[0])
                if entry is not None:
                    entry.waiters.append(_Waiter(pending.done, duplicate=True))
                else:  # its ack names the stored number and time (not the text)
                    earlier = _message(draft, *known)
                    pending.done.set_result(dataclasses.replace(earlier, duplicate=True))
                continue
            if len(self._line) >= MAX_STAGED:
                pending.done.set_exception(HistoryBehind("history is not keeping up"))
                continue
            room.last += 1
            room.used = room.last
            message = _message(draft, room.last, now)
            room.remember(message)
            entry = _Staged(message, [_Waiter(pending.done, duplicate=False)])
            room.staged[message.seq] = entry
            self._line.append(entry)
            fresh.append(message)
        if not fresh:
            return
        self._metrics.history_staged.set(len(self._line))
        if self._storing is None:
            self._storing = asyncio.create_task(self._store_all(), name="papo-history-writer")
        try:
            self._publish(fresh)
        except Exception as exc:  # still stored: resumes and gap fills bring them
            log.warning("publish failed before store", extra={"error": repr(exc)})

    def _learn(self, room: str) -> list[Pending]:
        """The drafts held for ``room`` while it is read, starting the read if none runs."""
        parked = self._seeding.get(room)
        if parked is None:
            parked = self._seeding[room] = []
            task = asyncio.create_task(self._seed(room), name=f"papo-seed-{room}")
            self._seeds.add(task)
            task.add_done_callback(self._seeds.discard)
        return parked

    async def _seed(self, room: str) -> None:
        """Learn the room's last number and recent draft keys from the store, then queue
        its held drafts ahead of everything that came after them. A room with nothing
        staged holds nothing the store lacks, so the store's word is whole."""
        try:
            messages = await self._store.before(room, None, SEED_KEYS)
        except Exception as exc:
            log.warning("history read failed", extra={"room": room, "error": repr(exc)})
            fail((p.done for p in self._seeding.pop(room, ())), exc)
            return
        except asyncio.CancelledError:
            fail(
                (p.done for p in self._seeding.pop(room, ())), RuntimeError("papo is shutting down")
            )
            raise
        stored_last = messages[-1].seq if messages else 0
        floor = min(self._floors.pop(room, 0), stored_last + MAX_STAGED)
        state = _Room(last=max(stored_last, floor), used=stored_last)
        for message in messages:
            state.remember(message)
        self._rooms[room] = state
        self._number(self._seeding.pop(room, []))
        if len(self._rooms) > MAX_ROOMS:
            # Never the room just learned: its held drafts are about to be numbered,
            # and forgetting it would send them back to be learned again, read after
            # read, for as long as every other room has messages staged.
            idle = [n for n, known in self._rooms.items() if not known.staged and n != room]
            for name in idle[: len(self._rooms) - MAX_ROOMS]:
                del self._rooms[name]

    # --- storing -----------------------------------------------------------------------------

    async def _store_all(self) -> None:
        delay = RETRY_FIRST
        try:
            while self._line:
                # Group commit with a short delay: a busy node writes at most every
                # WRITE_GAP with everything numbered meanwhile, instead of one write per
                # few messages; each write costs papo's loop and the store far more than
                # the messages in it. Only acks wait for it, never the room.
                gap = self._last_write + WRITE_GAP - time.perf_counter()
                if gap > 0:
                    await asyncio.sleep(gap)
                batch = list(islice(self._line, MAX_BATCH))
                started = self._last_write = time.perf_counter()
                try:
                    results = await self._store.insert([entry.message for entry in batch])
                except Exception as exc:
                    log.warning(
                        "history write failed; retrying",
                        extra={"messages": len(self._line), "error": repr(exc), "retry_s": delay},
                    )
                    self._metrics.history_errors.inc()
                    failure = NotStoredYet("the message was delivered but is not stored yet")
                    fail((w.done for entry in self._line for w in entry.waiters), failure)
                    for entry in self._line:
                        entry.waiters.clear()
                        if entry.written is not None:  # edits waiting: refused, not held
                            entry.written.set_exception(failure)
                            entry.written = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = RETRY_FIRST
                self._metrics.history_seconds.observe(time.perf_counter() - started)
                self._metrics.history_batch.observe(len(batch))
                for entry, result in zip(batch, results, strict=True):
                    self._line.popleft()
                    self._settle(entry, result)
                self._metrics.history_staged.set(len(self._line))
        finally:
            self._storing = None

    def _settle(self, entry: _Staged, result: Stored | None) -> None:
        message = entry.message
        room = self._rooms[message.room]  # rooms with staged messages are never forgotten
        del room.staged[message.seq]
        if entry.written is not None:
            entry.written.set_result(None)
        if result is None:
            log.error(
                "sequence number taken by another writer: is a second node with the memory "
                "broker sharing this history store? Nodes that share a store need "
                "PAPO_BROKER=redis",
                extra={"room": message.room, "seq": message.seq},
            )
            fail((w.done for w in entry.waiters), RuntimeError("sequence number taken"))
            return
        if result.duplicate:  # a retry of a message stored before this node knew the room
            room.remember(result)
        else:
            self._metrics.messages.inc()
        # Stored is frozen: the senders of one message can share one answer, and a
        # retry's is made only when a retry waits.
        retried = result if result.duplicate else None
        for waiter in entry.waiters:
            if waiter.done.done():
                continue
            if not waiter.duplicate:
                waiter.done.set_result(result)
                continue
            if retried is None:
                retried = dataclasses.replace(result, duplicate=True)
            waiter.done.set_result(retried)


class StagedHistory:
    """The store as readers must see it: with every staged message merged in."""

    def __init__(self, store: History, writes: WriteBehind) -> None:
        self._store = store
        self._writes = writes

    async def prepare(self) -> None:
        await self._store.prepare()

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        return await self._store.append(drafts)

    async def insert(self, messages: Sequence[Stored]) -> list[Stored | None]:
        return await self._store.insert(messages)

    # A staged list is taken before the store is asked: a message leaves it only once
    # stored, so each message is in the list, in the store's answer, or in both.

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        staged = [m for m in self._writes.staged(room) if m.seq > seq]
        stored = await self._store.after(room, seq, limit)
        return _merge(stored, staged)[:limit]

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        staged = [m for m in self._writes.staged(room) if seq is None or m.seq < seq]
        stored = await self._store.before(room, seq, limit)
        return _merge(stored, staged)[-limit:] if limit > 0 else []

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        staged = {room: self._writes.staged(room) for room in rooms}
        stored = await self._store.last_seqs(rooms)
        return {room: max([stored[room]] + [m.seq for m in staged[room]]) for room in rooms}

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        await self._writes.until_stored(room, seq)
        return await self._store.edit(room, seq, sender_id, text)

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        await self._writes.until_stored(room, seq)
        return await self._store.delete(room, seq, sender_id)


def _collect(written: asyncio.Future[None]) -> None:
    """Mark a failed write's outcome as seen: the edits that waited for it may be gone."""
    if not written.cancelled():
        written.exception()


def _message(draft: Draft, seq: int, ts: float) -> Stored:
    return Stored(
        room=draft.room,
        seq=seq,
        ts=ts,
        sender_id=draft.sender_id,
        sender_name=draft.sender_name,
        text=draft.text,
        client_id=draft.client_id,
    )


def _merge(stored: list[Stored], staged: list[Stored]) -> list[Stored]:
    if not staged:
        return stored
    by_seq = {message.seq: message for message in staged}
    by_seq.update((message.seq, message) for message in stored)  # the store's copy wins
    return [by_seq[seq] for seq in sorted(by_seq)]
