"""In-process ``History`` for a single node without MongoDB, and for tests of the hub.

Each room keeps its messages sorted by sequence with a parallel list of the numbers,
so reads bisect: numbers a node handed out but never stored (a retried send caught
only here) leave holes that reads step over, as the durable store's queries do.
"""

from __future__ import annotations

import dataclasses
import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from papo.hub.history import Draft, Stored

DraftKey = tuple[str, str, str]


@dataclass(slots=True)
class _Room:
    messages: list[Stored] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)

    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def index(self, seq: int) -> int | None:
        at = bisect_left(self.seqs, seq)
        return at if at < len(self.seqs) and self.seqs[at] == seq else None

    def put(self, message: Stored) -> None:
        at = bisect_right(self.seqs, message.seq)
        self.seqs.insert(at, message.seq)
        self.messages.insert(at, message)


class MemoryHistory:
    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._by_client: dict[DraftKey, int] = {}

    async def prepare(self) -> None:
        return None

    def _room(self, room: str) -> _Room:
        return self._rooms.setdefault(room, _Room())

    def _earlier(self, key: DraftKey) -> Stored | None:
        seq = self._by_client.get(key)
        if seq is None:
            return None
        room = self._rooms[key[0]]
        at = room.index(seq)
        return None if at is None else room.messages[at]

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        results = []
        for draft in drafts:
            key = (draft.room, draft.sender_id, draft.client_id)
            earlier = self._earlier(key)
            if earlier is not None:
                results.append(dataclasses.replace(earlier, duplicate=True))
                continue
            room = self._room(draft.room)
            stored = Stored(
                room=draft.room,
                seq=room.last() + 1,
                ts=time.time(),
                sender_id=draft.sender_id,
                sender_name=draft.sender_name,
                text=draft.text,
                client_id=draft.client_id,
            )
            room.put(stored)
            self._by_client[key] = stored.seq
            results.append(stored)
        return results

    async def insert(self, messages: Sequence[Stored]) -> list[Stored | None]:
        results: list[Stored | None] = []
        for message in messages:
            key = (message.room, message.sender_id, message.client_id)
            earlier = self._earlier(key)
            room = self._room(message.room)
            if earlier is not None:
                same = earlier.seq == message.seq
                results.append(earlier if same else dataclasses.replace(earlier, duplicate=True))
            elif room.index(message.seq) is not None:
                results.append(None)
            else:
                room.put(message)
                self._by_client[key] = message.seq
                results.append(message)
        return results

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        held = self._rooms.get(room)
        if held is None:
            return []
        start = bisect_right(held.seqs, seq)
        return held.messages[start : start + limit]

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        held = self._rooms.get(room)
        if held is None or limit <= 0:
            return []
        end = len(held.seqs) if seq is None else bisect_left(held.seqs, seq)
        return held.messages[max(0, end - limit) : end]

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        return {room: self._rooms[room].last() if room in self._rooms else 0 for room in rooms}

    def _own(self, room: str, seq: int, sender_id: str) -> int | None:
        held = self._rooms.get(room)
        at = None if held is None else held.index(seq)
        if held is None or at is None:
            return None
        message = held.messages[at]
        return at if message.sender_id == sender_id and not message.deleted else None

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        at = self._own(room, seq, sender_id)
        if at is None:
            return None
        messages = self._rooms[room].messages
        messages[at] = dataclasses.replace(messages[at], text=text, edited=True)
        return messages[at]

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        at = self._own(room, seq, sender_id)
        if at is None:
            return None
        messages = self._rooms[room].messages
        messages[at] = dataclasses.replace(messages[at], text="", deleted=True)
        return messages[at]
