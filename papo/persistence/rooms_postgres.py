"""``RoomStore`` on PostgreSQL: rooms, memberships and read markers."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from papo.hub.rooms import Room
from papo.protocol.frames import UserRef

_ROOM = "id, kind, name, topic, created_by, created_at"


def _room(row: asyncpg.Record) -> Room:
    return Room(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        topic=row["topic"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


class PostgresRoomStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, room: Room, members: Sequence[UserRef]) -> Room:
        async with self._pool.acquire() as connection, connection.transaction():
            inserted = await connection.fetchrow(
                "INSERT INTO rooms (id, kind, name, topic, created_by, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING "
                "RETURNING id, kind, name, topic, created_by, created_at",
                room.id,
                room.kind,
                room.name,
                room.topic,
                room.created_by,
                room.created_at,
            )
            if inserted is None:
                existing = await connection.fetchrow(
                    "SELECT id, kind, name, topic, created_by, created_at FROM rooms WHERE id = $1",
                    room.id,
                )
                assert existing is not None
                return _room(existing)
            await connection.executemany(
                "INSERT INTO room_members (room_id, user_id, display_name) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(room.id, user.id, user.name) for user in members],
            )
            return _room(inserted)

    async def get(self, room_id: str) -> Room | None:
        row = await self._pool.fetchrow(
            "SELECT id, kind, name, topic, created_by, created_at FROM rooms WHERE id = $1", room_id
        )
        return _room(row) if row else None

    def known_room(self, room_id: str) -> Room | None:
        return None  # every answer is a query; CachedRoomStore remembers them

    def known_member(self, room_id: str, user_id: str) -> bool:
        return False

    def forget_member(self, room_id: str, user_id: str) -> None:
        pass  # nothing remembered: every answer is a query

    async def close(self) -> None:
        pass  # the pool is the node's, closed with its other connections

    async def add_member(self, room_id: str, user: UserRef) -> bool:
        status = await self._pool.execute(
            "INSERT INTO room_members (room_id, user_id, display_name) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id, user_id) DO NOTHING",
            room_id,
            user.id,
            user.name,
        )
        return bool(status.endswith(" 1"))

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id
        )
        return bool(status.endswith(" 1"))

    async def is_member(self, room_id: str, user_id: str) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id
            )
        )

    async def members_among(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not pairs:
            return set()
        rows = await self._pool.fetch(
            "SELECT m.room_id, m.user_id FROM room_members m "
            "JOIN unnest($1::text[], $2::text[]) AS asked (room_id, user_id) "
            "USING (room_id, user_id)",
            [room for room, _ in pairs],
            [user for _, user in pairs],
        )
        return {(row["room_id"], row["user_id"]) for row in rows}

    async def members(self, room_id: str) -> list[UserRef]:
        rows = await self._pool.fetch(
            "SELECT user_id, display_name FROM room_members WHERE room_id = $1 ORDER BY joined_at",
            room_id,
        )
        return [UserRef(id=row["user_id"], name=row["display_name"]) for row in rows]

    async def rooms_of(self, user_id: str, limit: int, after: str | None) -> list[Room]:
        rows = await self._pool.fetch(
            "SELECT r.id, r.kind, r.name, r.topic, r.created_by, r.created_at FROM rooms r "
            "JOIN room_members m ON m.room_id = r.id "
            "WHERE m.user_id = $1 AND ($2::text IS NULL OR r.id > $2) ORDER BY r.id LIMIT $3",
            user_id,
            after,
            limit,
        )
        return [_room(row) for row in rows]

    async def public_rooms(self, limit: int, after: str | None) -> list[Room]:
        rows = await self._pool.fetch(
            "SELECT id, kind, name, topic, created_by, created_at FROM rooms "
            "WHERE kind = 'public' AND ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_room(row) for row in rows]

    async def set_read(self, room_id: str, user_id: str, seq: int) -> None:
        await self._pool.execute(
            "UPDATE room_members SET last_read_seq = GREATEST(last_read_seq, $3) "
            "WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
            seq,
        )

    async def read_markers(self, user_id: str, room_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT room_id, last_read_seq FROM room_members "
            "WHERE user_id = $1 AND room_id = ANY($2::text[])",
            user_id,
            list(room_ids),
        )
        found = dict.fromkeys(room_ids, 0)
        found.update({row["room_id"]: row["last_read_seq"] for row in rows})
        return found

    async def member_counts(self, room_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._pool.fetch(
            "SELECT room_id, count(*) AS n FROM room_members WHERE room_id = ANY($1::text[]) "
            "GROUP BY room_id",
            list(room_ids),
        )
        found = dict.fromkeys(room_ids, 0)
        found.update({row["room_id"]: row["n"] for row in rows})
        return found
