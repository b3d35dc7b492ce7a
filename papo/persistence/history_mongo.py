"""``History`` on MongoDB through PyMongo's async API.

Documents: ``messages`` {room, seq, ts, sender_id, sender_name, text, client_id, edited,
deleted} with unique indexes on (room, seq) and (room, sender_id, client_id);
``room_sequences`` {_id: room, seq} holds each room's last sequence. A batch reserves
its block of sequences with one ``$inc`` and is written with one ordered insert, with
journaled write concern, before anyone is acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.write_concern import WriteConcern

from papo.hub.history import Draft, Stored

Document = dict[str, Any]


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
        self._sequences: AsyncCollection[Document] = db["room_sequences"]

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
        keys = {(d.sender_id, d.client_id) for d in drafts}
        earlier: dict[tuple[str, str], Document] = {}
        if keys:
            cursor = self._messages.find(
                {"room": room, "client_id": {"$in": sorted({c for _, c in keys})}}
            )
            async for doc in cursor:
                earlier[(doc["sender_id"], doc["client_id"])] = doc
        fresh: list[Draft] = []
        seen: set[tuple[str, str]] = set()
        for draft in drafts:
            key = (draft.sender_id, draft.client_id)
            if key not in earlier and key not in seen:
                fresh.append(draft)
                seen.add(key)
        new_docs: dict[tuple[str, str], Document] = {}
        if fresh:
            # Create the counter first, then increment without upsert: an upserting
            # find_one_and_update under concurrency is where some servers misbehave.
            await self._sequences.update_one(
                {"_id": room}, {"$setOnInsert": {"seq": 0}}, upsert=True
            )
            counter = await self._sequences.find_one_and_update(
                {"_id": room},
                {"$inc": {"seq": len(fresh)}},
                return_document=ReturnDocument.AFTER,
            )
            assert counter is not None
            first = counter["seq"] - len(fresh) + 1
            now = time.time()
            docs = [
                {
                    "room": room,
                    "seq": first + index,
                    "ts": now,
                    "sender_id": d.sender_id,
                    "sender_name": d.sender_name,
                    "text": d.text,
                    "client_id": d.client_id,
                }
                for index, d in enumerate(fresh)
            ]
            await self._messages.insert_many(docs, ordered=True)
            new_docs = {(doc["sender_id"], doc["client_id"]): doc for doc in docs}
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
        found = dict.fromkeys(rooms, 0)
        if rooms:
            async for doc in self._sequences.find({"_id": {"$in": list(rooms)}}):
                found[doc["_id"]] = doc["seq"]
        return found

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
