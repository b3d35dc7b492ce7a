"""In-process ``RoomStore`` for a single node without PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from papo.hub.rooms import Room
from papo.protocol.frames import UserRef


class MemoryRoomStore:
    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}
        self._members: dict[str, dict[str, UserRef]] = {}
        self._read: dict[tuple[str, str], int] = {}

    async def create(self, room: Room, members: Sequence[UserRef]) -> Room:
        if room.id in self._rooms:
            return self._rooms[room.id]
        self._rooms[room.id] = room
        self._members[room.id] = {user.id: user for user in members}
        return room

    async def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def known_room(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    def known_member(self, room_id: str, user_id: str) -> bool:
        return user_id in self._members.get(room_id, {})

    def forget_member(self, room_id: str, user_id: str) -> None:
        pass  # the leave already changed this store, the only one

    async def close(self) -> None:
        pass

    async def add_member(self, room_id: str, user: UserRef) -> bool:
        members = self._members.setdefault(room_id, {})
        added = user.id not in members
        members[user.id] = user
        return added

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        return self._members.get(room_id, {}).pop(user_id, None) is not None

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return user_id in self._members.get(room_id, {})

    async def members_among(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return {(room, user) for room, user in pairs if user in self._members.get(room, {})}

    async def members(self, room_id: str) -> list[UserRef]:
        return list(self._members.get(room_id, {}).values())

    async def rooms_of(self, user_id: str, limit: int, after: str | None) -> list[Room]:
        ids = sorted(r for r, members in self._members.items() if user_id in members)
        return [self._rooms[r] for r in ids if after is None or r > after][:limit]

    async def public_rooms(self, limit: int, after: str | None) -> list[Room]:
        ids = sorted(r for r, room in self._rooms.items() if room.kind == "public")
        return [self._rooms[r] for r in ids if after is None or r > after][:limit]

    async def set_read(self, room_id: str, user_id: str, seq: int) -> None:
        key = (room_id, user_id)
        self._read[key] = max(self._read.get(key, 0), seq)

    async def read_markers(self, user_id: str, room_ids: Sequence[str]) -> dict[str, int]:
        return {room: self._read.get((room, user_id), 0) for room in room_ids}

    async def member_counts(self, room_ids: Sequence[str]) -> dict[str, int]:
        return {room: len(self._members.get(room, {})) for room in room_ids}
