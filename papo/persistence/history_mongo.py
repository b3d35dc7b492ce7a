"""``History`` on MongoDB through PyMongo's async API.

Documents: ``messages`` {room, seq, ts, sender_id, sender_name, text, client_id, edited,
deleted} with unique indexes on (room, seq) and (room, sender_id, client_id). A batch
takes the numbers after the room's highest sequence and is written with one ordered
insert, with journaled write concern, before anyone is acknowledged; the (room, seq)
index settles races between nodes and the (room, sender, client id) index turns a
retried send into a duplicate (see ``_insert``). In the common case a batch costs one
round trip: the node remembers the last number it wrote per room and only reads the
highest stored one again after losing a race.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from papo.hub.history import Draft, Stored

Document = dict[str, Any]
DUPLICATE_KEY = 11000
MAX_SEQUENCE_RACES = 50
MAX_REMEMBERED_ROOMS = 100_000


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


class MongoHistory:
    def __init__(self, client: AsyncMongoClient[Document], database: str) -> None:
        durable = WriteConcern(w=1, j=True)
        db = client.get_database(database, write_concern=durable)
        self._messages: AsyncCollection[Document] = db["messages"]
        # room -> the last sequence this node stored there (a guess other nodes may beat)
        self._last_written: dict[str, int] = {}

    async def prepare(self) -> None:
        await self._messages.create_index(
            [("room", ASCENDING), ("seq", ASCENDING)], unique=True, name="room_seq"
        )
        await self._messages.create_index(
            [("room", ASCENDING), ("sender_id", ASCENDING), ("client_id", ASCENDING)],
            unique=True,
            name="room_sender_client",
        )

    async def append(self, room: str, drafts: Sequence[Draft]) -> list[Stored]:
        earlier: dict[tuple[str, str], Document] = {}
        fresh: list[Draft] = []
        seen: set[tuple[str, str]] = set()
        for draft in drafts:
            key = (draft.sender_id, draft.client_id)
            if key not in earlier and key not in seen:
                fresh.append(draft)
                seen.add(key)
        new_docs = await self._insert(room, fresh, earlier)
        results = []
        returned: set[tuple[str, str]] = set()
        for draft in drafts:
            key = (draft.sender_id, draft.client_id)
            if key in new_docs and key not in returned:
                results.append(_stored(new_docs[key]))
                returned.add(key)
            else:
                results.append(_stored(earlier.get(key) or new_docs[key], duplicate=True))
        return results

    async def _insert(
        self, room: str, pending: list[Draft], earlier: dict[tuple[str, str], Document]
    ) -> dict[tuple[str, str], Document]:
        """Number ``pending`` after the room's highest sequence and insert them in order.

        The unique (room, seq) index is the arbiter between nodes: a node that lost the
        race for a number re-reads the highest one and numbers the rest again. A number
        is therefore only ever taken by a stored message, and sequences stay gapless even
        when a node dies mid-write. A draft whose client id is already stored (a retry,
        on this node or another) is refused by the other unique index and becomes a
        duplicate of the stored message instead.
        """
        stored: dict[tuple[str, str], Document] = {}
        for _ in range(MAX_SEQUENCE_RACES):
            if not pending:
                return stored
            last = self._last_written.get(room)
            if last is None:
                last = await self._last_seq(room)
            now = time.time()
            docs: list[Document] = [
                {
                    "room": room,
                    "seq": last + 1 + index,
                    "ts": now,
                    "sender_id": d.sender_id,
                    "sender_name": d.sender_name,
                    "text": d.text,
                    "client_id": d.client_id,
                }
                for index, d in enumerate(pending)
            ]
            try:
                await self._messages.insert_many(docs, ordered=True)
            except BulkWriteError as exc:
                inserted = int(exc.details.get("nInserted", 0))
                errors = exc.details.get("writeErrors") or [{}]
                if errors[0].get("code") != DUPLICATE_KEY:
                    self._last_written.pop(room, None)
                    raise
                for doc in docs[:inserted]:
                    stored[(doc["sender_id"], doc["client_id"])] = doc
                loser = pending[inserted]
                existing = await self._messages.find_one(
                    {"room": room, "sender_id": loser.sender_id, "client_id": loser.client_id}
                )
                if existing is not None:  # a retry: its number is still free
                    earlier[(loser.sender_id, loser.client_id)] = existing
                    pending = pending[inserted + 1 :]
                    self._last_written[room] = last + inserted
                else:  # another node took the number: read the highest again
                    pending = pending[inserted:]
                    self._last_written.pop(room, None)
                continue
            except BaseException:
                self._last_written.pop(room, None)  # the write may or may not have landed
                raise
            for doc in docs:
                stored[(doc["sender_id"], doc["client_id"])] = doc
            self._remember(room, docs[-1]["seq"])
            return stored
        raise RuntimeError(f"room {room}: lost the sequence race {MAX_SEQUENCE_RACES} times")

    def _remember(self, room: str, seq: int) -> None:
        if len(self._last_written) >= MAX_REMEMBERED_ROOMS and room not in self._last_written:
            self._last_written.clear()
        self._last_written[room] = seq

    async def _last_seq(self, room: str) -> int:
        doc = await self._messages.find_one(
            {"room": room}, projection={"seq": 1}, sort=[("seq", DESCENDING)]
        )
        return int(doc["seq"]) if doc else 0

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        cursor = self._messages.find({"room": room, "seq": {"$gt": seq}}).sort("seq", ASCENDING)
        return [_stored(doc) async for doc in cursor.limit(limit)]

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        query: Document = {"room": room}
        if seq is not None:
            query["seq"] = {"$lt": seq}
        cursor = self._messages.find(query).sort("seq", DESCENDING).limit(limit)
        newest_first = [_stored(doc) async for doc in cursor]
        return newest_first[::-1]

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(rooms))
        seqs = await asyncio.gather(*(self._last_seq(room) for room in unique))
        return dict(zip(unique, seqs, strict=True))

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        doc = await self._messages.find_one_and_update(
            {"room": room, "seq": seq, "sender_id": sender_id, "deleted": {"$ne": True}},
            {"$set": {"text": text, "edited": True}},
            return_document=ReturnDocument.AFTER,
        )
        return _stored(doc) if doc else None

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        doc = await self._messages.find_one_and_update(
            {"room": room, "seq": seq, "sender_id": sender_id, "deleted": {"$ne": True}},
            {"$set": {"text": "", "deleted": True}},
            return_document=ReturnDocument.AFTER,
        )
        return _stored(doc) if doc else None
