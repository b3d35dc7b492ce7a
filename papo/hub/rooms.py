"""The ``RoomStore`` port: rooms, their members and each member's read marker.

Contract: membership changes are atomic per (room, user); ``add_member`` and
``remove_member`` report whether anything changed, so events are sent once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from papo.protocol.frames import UserRef

RoomKind = Literal["public", "private", "dm"]


@dataclass(frozen=True, slots=True)
class Room:
    id: str
    kind: RoomKind
    name: str
    topic: str
    created_by: str
    created_at: datetime


class RoomStore(Protocol):
    async def create(self, room: Room, members: Sequence[UserRef]) -> Room:
        """Create ``room`` with ``members``; an existing room with that id is returned as is."""
        ...

    async def get(self, room_id: str) -> Room | None: ...

    def known_room(self, room_id: str) -> Room | None:
        """The room, if this store can answer without waiting; ``None`` means "ask
        ``get``". A member's send is handled as its frame is read only when the room
        and the membership are answered this way (docs/architecture.md)."""
        ...

    def known_member(self, room_id: str, user_id: str) -> bool:
        """True if this membership is answered without waiting; False means "ask
        ``is_member``", not "not a member"."""
        ...

    def forget_member(self, room_id: str, user_id: str) -> None:
        """A leave learned from another node: a store that remembers memberships asks
        again next time; one that is the truth itself has nothing to forget."""
        ...

    async def close(self) -> None:
        """Stop any work of the store's own (the node closes its connections next)."""
        ...

    async def add_member(self, room_id: str, user: UserRef) -> bool: ...

    async def remove_member(self, room_id: str, user_id: str) -> bool: ...

    async def is_member(self, room_id: str, user_id: str) -> bool: ...

    async def members_among(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (room id, user id) pairs are memberships: one question for
        many, so re-checking every talking member costs one query, not one each."""
        ...

    async def members(self, room_id: str) -> list[UserRef]: ...

    async def rooms_of(self, user_id: str, limit: int, after: str | None) -> list[Room]:
        """The user's rooms ordered by id, starting after the id ``after``."""
        ...

    async def public_rooms(self, limit: int, after: str | None) -> list[Room]: ...

    async def set_read(self, room_id: str, user_id: str, seq: int) -> None:
        """Move the read marker forward (never back)."""
        ...

    async def read_markers(self, user_id: str, room_ids: Sequence[str]) -> dict[str, int]: ...

    async def member_counts(self, room_ids: Sequence[str]) -> dict[str, int]: ...
