"""In-process ``History`` for a single node without MongoDB, and for tests of the hub."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from papo.hub.history import Draft, Stored


class MemoryHistory:
    def __init__(self) -> None:
        self._rooms: dict[str, list[Stored]] = {}
        self._by_client: dict[tuple[str, str, str], int] = {}

    async def prepare(self) -> None:
        return None

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        results = []
        for draft in drafts:
            room = draft.room
            messages = self._rooms.setdefault(room, [])
            key = (room, draft.sender_id, draft.client_id)
            if key in self._by_client:
                earlier = messages[self._by_client[key] - 1]
                results.append(dataclasses.replace(earlier, duplicate=True))
                continue
            stored = Stored(
                room=room,
                seq=len(messages) + 1,
                ts=time.time(),
                sender_id=draft.sender_id,
                sender_name=draft.sender_name,
                text=draft.text,
                client_id=draft.client_id,
            )
            messages.append(stored)
            self._by_client[key] = stored.seq
            results.append(stored)
        return results

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        messages = self._rooms.get(room, [])
        return messages[seq : seq + limit]

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        messages = self._rooms.get(room, [])
        end = len(messages) if seq is None else min(max(seq - 1, 0), len(messages))
        return messages[max(0, end - limit) : end]

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        return {room: len(self._rooms.get(room, [])) for room in rooms}

    def _own(self, room: str, seq: int, sender_id: str) -> Stored | None:
        messages = self._rooms.get(room, [])
        if not 1 <= seq <= len(messages):
            return None
        message = messages[seq - 1]
        return message if message.sender_id == sender_id and not message.deleted else None

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        message = self._own(room, seq, sender_id)
        if message is None:
            return None
        edited = dataclasses.replace(message, text=text, edited=True)
        self._rooms[room][seq - 1] = edited
        return edited

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        message = self._own(room, seq, sender_id)
        if message is None:
            return None
        deleted = dataclasses.replace(message, text="", deleted=True)
        self._rooms[room][seq - 1] = deleted
        return deleted
