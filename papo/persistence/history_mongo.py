"""``History`` on MongoDB through PyMongo's async API.

Documents: ``messages`` {_id: {room, sender_id, client_id}, room, seq, ts, sender_id,
sender_name, text, client_id, edited, deleted} with a unique index on (room, seq). A
batch (drafts of any number of rooms) takes the numbers after each room's highest
sequence and is written with one ordered insert, with journaled write concern, before
anyone is acknowledged; the (room, seq) index settles races between nodes and the
``_id``, a message's draft key, turns a retried send into a duplicate (see ``_insert``).
In the common case a batch costs one round trip: the node remembers the highest number
it wrote or read per room (a join reads it) and only reads it again after losing a race.

Why the draft key is the ``_id`` and not an index of its own: MongoDB keeps a unique
index on ``_id`` whatever it holds, and every index is work in every insert. With a
server-made ``_id`` and two unique indexes beside it, the history store used 0.23 ms of
its CPU per message here; with the draft key as ``_id``, 0.16 ms (``python -m
bench.history_store``; docs/benchmarks-log.md, "Changes measured"). A collection written
by papo before 2026-11-24 has server-made ``_id``s and a ``room_sender_client`` index;
papo keeps using that index for the messages it covers (see ``prepare``) and
docs/operations.md says when to drop it.

Every write here is idempotent by itself (a message by its draft key, an edit or a
delete by its values), so a write whose reply is lost to a dropped connection or a
primary change is simply tried once more (see ``_insert``, ``_once_more_if_lost``); the
client is built without PyMongo's retryable writes (``persistence/mongo.py``), which
would record every write server-side to do the same.

Inserts go out as the ``insert`` command itself rather than through ``insert_many``
(see ``_insert_ordered``): the history write is on the node's own event loop, between
frames, and the command takes 40 % less of papo's CPU per write than ``insert_many``'s
bulk machinery, and less of the store's (docs/benchmarks-log.md, "Changes measured").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from pymongo.write_concern import WriteConcern

from papo.hub.history import Draft, Stored

log = logging.getLogger("papo.history")

Document = dict[str, Any]
DraftKey = tuple[str, str, str]  # (room, sender id, client id): what makes a send unique
DUPLICATE_KEY = 11000
MAX_SEQUENCE_RACES = 50
MAX_REMEMBERED_ROOMS = 100_000
READ_CONCURRENCY = 4
# One insert command carries documents up to about this size (estimated from the text
# lengths); MongoDB takes a command document of at most 16 MiB.
COMMAND_BYTES = 8 * 1024 * 1024
# The unique (room, seq) index: a room's numbers, and what settles races between nodes.
NUMBER_INDEX = "room_seq"
# The draft-key index of collections written before the draft key became the _id.
LEGACY_KEY_INDEX = "room_sender_client"

T = TypeVar("T")


def _key(draft: Draft) -> DraftKey:
    return (draft.room, draft.sender_id, draft.client_id)


def _draft_id(room: str, sender_id: str, client_id: str) -> Document:
    """A message's ``_id``. Built here only: MongoDB compares embedded documents field
    by field in order, so every lookup must spell the key the way the insert did."""
    return {"room": room, "sender_id": sender_id, "client_id": client_id}


def _lost_in_flight(exc: AutoReconnect) -> bool:
    """The write may have reached the server and only its reply was lost. A server that
    could not be selected at all never saw it, and waiting for it again helps nobody."""
    return not isinstance(exc, ServerSelectionTimeoutError)


async def _once_more_if_lost(
    attempt: Callable[[], Awaitable[T]], again: Callable[[], Awaitable[T]] | None = None
) -> T:
    """Run an idempotent write; if its reply is lost, run ``again`` (or it) once more."""
    try:
        return await attempt()
    except AutoReconnect as exc:
        if not _lost_in_flight(exc):
            raise
    return await (again or attempt)()


def _document(message: Draft | Stored, seq: int, ts: float) -> Document:
    """The stored form of a message numbered ``seq`` at ``ts``: by this node's store
    (a draft) or by the node before it was written (a staged message)."""
    return {
        "_id": _draft_id(message.room, message.sender_id, message.client_id),
        "room": message.room,
        "seq": seq,
        "ts": ts,
        "sender_id": message.sender_id,
        "sender_name": message.sender_name,
        "text": message.text,
        "client_id": message.client_id,
    }


def _stored(doc: Document, *, duplicate: bool = False) -> Stored:
    return Stored(
        room=doc["room"],
        seq=doc["seq"],
        ts=doc["ts"],
        sender_id=doc["sender_id"],
        sender_name=doc["sender_name"],
        text=doc["text"],
        client_id=doc["client_id"],
        edited=doc.get("edited", False),
        deleted=doc.get("deleted", False),
        duplicate=duplicate,
    )


def _size_bound(doc: Document) -> int:
    """At most how many bytes ``doc`` takes as BSON (four per character of its texts)."""
    texts = doc["text"], doc["sender_name"], doc["room"], doc["sender_id"], doc["client_id"]
    return 200 + 4 * sum(len(text) for text in texts)


def _chunks(docs: list[Document]) -> list[list[Document]]:
    """``docs`` in order, in parts that each fit one command (none for no documents:
    MongoDB refuses an insert of nothing)."""
    chunks: list[list[Document]] = []
    size = 0
    for doc in docs:
        bound = _size_bound(doc)
        if not chunks or size + bound > COMMAND_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(doc)
        size += bound
    return chunks


class MongoHistory:
    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        durable = WriteConcern(w=1, j=True)
        db = client.get_database(database, write_concern=durable)
        self._database = db
        self._durable = durable.document
        self._messages: AsyncCollection[Document] = db["messages"]
        # room -> the highest sequence this node knows is stored there, from its own
        # writes and its reads: a guess other nodes may beat, never one past the truth
        # (stored numbers only grow), so a stale guess costs a refused insert, never a gap
        self._highest: dict[str, int] = {}
        # Reads run at most this many at a time. A node's first sends after a start look
        # up every busy room's highest sequence at once, and reconnecting clients read
        # many rooms at once: one query per room all at once would open a connection (a
        # server thread) per room. Writes never wait for this.
        self._reads = asyncio.Semaphore(READ_CONCURRENCY)
        # Whether the collection still has the draft-key index of older papo (``prepare``).
        self._legacy_keys = False

    async def prepare(self) -> None:
        await self._messages.create_index(
            [("room", ASCENDING), ("seq", ASCENDING)], unique=True, name=NUMBER_INDEX
        )
        # Messages stored before the draft key became the _id are covered by the old
        # index, and only by it: while it exists, a refused insert is looked up by
        # either key (each lookup uses its own index). papo never drops it itself.
        self._legacy_keys = LEGACY_KEY_INDEX in await self._messages.index_information()
        if self._legacy_keys:
            log.info(
                "history has the draft-key index of earlier papo; it is kept until dropped "
                "(docs/operations.md)",
                extra={"index": LEGACY_KEY_INDEX},
            )

    def _by_draft_key(self, room: str, sender_id: str, client_id: str) -> Document:
        by_id = {"_id": _draft_id(room, sender_id, client_id)}
        if not self._legacy_keys:
            return by_id
        return {"$or": [by_id, {"room": room, "sender_id": sender_id, "client_id": client_id}]}

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        earlier: dict[DraftKey, Document] = {}
        fresh: list[Draft] = []
        seen: set[DraftKey] = set()
        for draft in drafts:
            key = _key(draft)
            if key not in seen:
                fresh.append(draft)
                seen.add(key)
        new_docs = await self._insert(fresh, earlier)
        results = []
        returned: set[DraftKey] = set()
        for draft in drafts:
            key = _key(draft)
            if key in new_docs and key not in returned:
                results.append(_stored(new_docs[key]))
                returned.add(key)
            else:
                results.append(_stored(earlier.get(key) or new_docs[key], duplicate=True))
        return results

    async def _insert(
        self, pending: list[Draft], earlier: dict[DraftKey, Document]
    ) -> dict[DraftKey, Document]:
        """Number ``pending`` after each room's highest sequence and insert them in order.

        All rooms go into one ordered insert: one journaled commit for every room that
        had something waiting. The unique (room, seq) index is the arbiter between
        nodes: at the first refused document the insert stops, the documents before it
        are stored, and only the refused document's room is looked at again. If another
        node took the number, that room's highest sequence is read again and the rest is
        numbered anew; a number is therefore only ever taken by a stored message, and
        sequences stay gapless even when a node dies mid-write. A draft whose client id
        is already stored (a retry, on this node or another) is refused by its ``_id``
        and becomes a duplicate of the stored message instead.

        If the connection drops mid-insert, the insert is sent once more, numbered from
        the stored highest: drafts that had landed are refused by their ``_id`` and are
        returned as stored by this call, not as duplicates.
        """
        stored: dict[DraftKey, Document] = {}
        races: dict[str, int] = {}
        sent_when_lost: set[DraftKey] = set()
        while pending:
            rooms = list(dict.fromkeys(draft.room for draft in pending))
            last = {room: self._highest.get(room) for room in rooms}
            unknown = [room for room, seq in last.items() if seq is None]
            known = await self.last_seqs(unknown) if unknown else {}
            following = {
                room: (seq if seq is not None else known[room]) + 1 for room, seq in last.items()
            }
            now = time.time()
            docs: list[Document] = []
            for draft in pending:
                docs.append(_document(draft, following[draft.room], now))
                following[draft.room] += 1
            try:
                await self._insert_ordered(docs)
            except BulkWriteError as exc:
                inserted = int(exc.details.get("nInserted", 0))
                errors = exc.details.get("writeErrors") or [{}]
                if errors[0].get("code") != DUPLICATE_KEY:
                    self._forget(rooms)
                    raise
                self._keep(docs[:inserted], stored)
                loser = pending[inserted]
                existing = await self._messages.find_one(
                    self._by_draft_key(loser.room, loser.sender_id, loser.client_id)
                )
                if existing is not None and _key(loser) in sent_when_lost:
                    stored[_key(loser)] = existing  # this call's own insert had landed
                    pending = pending[inserted + 1 :]
                elif existing is not None:  # a retry: its number is still free
                    earlier[_key(loser)] = existing
                    pending = pending[inserted + 1 :]
                else:  # another node took the number: read the highest again
                    races[loser.room] = races.get(loser.room, 0) + 1
                    if races[loser.room] >= MAX_SEQUENCE_RACES:
                        raise RuntimeError(
                            f"room {loser.room}: lost the sequence race {MAX_SEQUENCE_RACES} times"
                        ) from exc
                    pending = pending[inserted:]
                    self._highest.pop(loser.room, None)
                continue
            except AutoReconnect as exc:
                self._forget(rooms)  # the write may or may not have landed
                if sent_when_lost or not _lost_in_flight(exc):
                    raise
                sent_when_lost.update(_key(draft) for draft in pending)
                continue
            except BaseException:
                self._forget(rooms)  # the write may or may not have landed
                raise
            self._keep(docs, stored)
            return stored
        return stored

    async def insert(self, messages: Sequence[Stored]) -> list[Stored | None]:
        """Store messages numbered by this node, in one ordered insert per refusal.

        The node numbered them itself (it is the rooms' only writer), so a refusal (by
        ``_id`` or by the (room, seq) index) is rare and says which of three things
        happened: this call's own earlier attempt landed (its reply was lost), a retried
        send this node did not know of was stored before under another number (a
        duplicate), or another writer holds the number (None). The insert then goes on
        after the refused one.
        """
        docs = [_document(message, message.seq, message.ts) for message in messages]
        results: list[Stored | None] = list(messages)
        start = 0
        resent = False
        while start < len(docs):
            try:
                await self._insert_ordered(docs[start:])
                break
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or [{}]
                if errors[0].get("code") != DUPLICATE_KEY:
                    raise
                refused = start + int(exc.details.get("nInserted", 0))
                message = messages[refused]
                earlier = await self._messages.find_one(
                    self._by_draft_key(message.room, message.sender_id, message.client_id)
                )
                if earlier is None:
                    results[refused] = None
                elif earlier["seq"] != message.seq:
                    results[refused] = _stored(earlier, duplicate=True)
                start = refused + 1
            except AutoReconnect as exc:
                if resent or not _lost_in_flight(exc):
                    raise
                resent = True  # what landed is refused as this call's own, above
        return results

    async def _insert_ordered(self, docs: list[Document]) -> None:
        """Insert ``docs`` in order, journaled; raise ``BulkWriteError`` as ``insert_many``
        would (``nInserted``, then the refused document's error first) at a refusal.

        The ``insert`` command itself, not ``insert_many``: one group commit every few
        milliseconds runs on the node's event loop, where every frame waits behind it,
        and the bulk API's bookkeeping (an ``_id`` made per document, per-operation
        records, the result built from them) cost 0.5 ms of papo's CPU for a write of
        ten messages against 0.3 ms for the command. Each document carries its ``_id``.
        """
        inserted = 0
        for chunk in _chunks(docs):
            reply = await self._database.command(
                "insert",
                self._messages.name,
                documents=chunk,
                ordered=True,
                writeConcern=self._durable,
            )
            errors = reply.get("writeErrors")
            if errors:
                first = min(errors, key=lambda error: int(error["index"]))
                refused = inserted + int(first["index"])
                raise BulkWriteError(
                    {"nInserted": refused, "writeErrors": [{**first, "index": refused}]}
                )
            concern = reply.get("writeConcernError")
            if concern:
                raise WriteConcernError(
                    concern.get("errmsg", "write concern failed"), concern.get("code"), reply
                )
            inserted += len(chunk)

    def _keep(self, docs: list[Document], stored: dict[DraftKey, Document]) -> None:
        """Record inserted documents and move each room's remembered sequence past them."""
        for doc in docs:
            stored[(doc["room"], doc["sender_id"], doc["client_id"])] = doc
            self._remember(doc["room"], doc["seq"])

    def _forget(self, rooms: list[str]) -> None:
        for room in rooms:
            self._highest.pop(room, None)

    def _remember(self, room: str, seq: int) -> None:
        if len(self._highest) >= MAX_REMEMBERED_ROOMS and room not in self._highest:
            self._highest.clear()
        self._highest[room] = seq

    def _learn(self, room: str, seq: int) -> None:
        """A read saw ``seq`` as the room's highest. A member joining a room reads it
        (papo answers a join with the room's last number), so the room's first send
        after a start finds its number known instead of reading it inside the write
        that every room's sends share. A read that started before this node's own
        write ended may be older than what it knows: never go back."""
        if seq > self._highest.get(room, -1):
            self._remember(room, seq)

    async def _last_seq(self, room: str) -> int:
        async with self._reads:
            doc = await self._messages.find_one(
                {"room": room}, projection={"seq": 1}, sort=[("seq", DESCENDING)]
            )
        return int(doc["seq"]) if doc else 0

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        cursor = self._messages.find({"room": room, "seq": {"$gt": seq}}).sort("seq", ASCENDING)
        async with self._reads:
            return [_stored(doc) async for doc in cursor.limit(limit)]

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        query: Document = {"room": room}
        if seq is not None:
            query["seq"] = {"$lt": seq}
        cursor = self._messages.find(query).sort("seq", DESCENDING).limit(limit)
        async with self._reads:
            newest_first = [_stored(doc) async for doc in cursor]
        if seq is None:  # the newest page: it starts at the room's highest number
            self._learn(room, newest_first[0].seq if newest_first else 0)
        return newest_first[::-1]

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(rooms))
        seqs = await asyncio.gather(*(self._last_seq(room) for room in unique))
        for room, seq in zip(unique, seqs, strict=True):
            self._learn(room, seq)
        return dict(zip(unique, seqs, strict=True))

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        doc = await _once_more_if_lost(
            lambda: self._messages.find_one_and_update(
                {"room": room, "seq": seq, "sender_id": sender_id, "deleted": {"$ne": True}},
                {"$set": {"text": text, "edited": True}},
                return_document=ReturnDocument.AFTER,
            )
        )
        return _stored(doc) if doc else None

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        own = {"room": room, "seq": seq, "sender_id": sender_id}
        gone = {"$set": {"text": "", "deleted": True}}
        doc = await _once_more_if_lost(
            lambda: self._messages.find_one_and_update(
                {**own, "deleted": {"$ne": True}}, gone, return_document=ReturnDocument.AFTER
            ),
            # The lost attempt may have deleted it already: find it deleted, not missing.
            lambda: self._messages.find_one_and_update(
                own, gone, return_document=ReturnDocument.AFTER
            ),
        )
        return _stored(doc) if doc else None
