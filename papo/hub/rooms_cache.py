"""A ``RoomStore`` that remembers what every frame asks: does this room exist, is this
person a member.

Every client frame about a room checks both; against PostgreSQL that was two queries
per ``message.send``. Rooms never change once created (the protocol has no rename or
delete), so a room found is remembered for good. Membership is remembered for
``member_seconds``: a leave through this node forgets it at once, and so does the
``room.left`` notice other nodes publish; a removal the notice missed (a broker outage)
takes effect here within that time. Negative answers are never
remembered, so a room created or a member added elsewhere is seen at once.

A member who keeps talking is asked about again behind their frames: one used in the
second half of its time starts a check that, if they are still a member, renews it.
Their frames never wait for PostgreSQL, where one in five of a chat client's sends
(one a second, remembered for 5 s) used to; and nothing is believed for longer than
``member_seconds`` past a store's answer, as before. The checks that fall due within
``RENEW_GATHER`` of each other are asked in one query: a node whose 10,000 members
keep talking would otherwise send PostgreSQL 4,000 membership queries a second, one
per member every 2.5 s; gathered, about four (one per quarter of a second by default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from itertools import islice

from papo.hub.metrics import HubMetrics
from papo.hub.rooms import Room, RoomStore
from papo.hub.tasks import stop_task
from papo.protocol.frames import UserRef

log = logging.getLogger("papo.hub")

MAX_ENTRIES = 100_000
RENEW_AFTER = 0.5  # share of ``member_seconds`` after which a use starts a renewal
RENEW_GATHER = 0.05  # share of ``member_seconds`` renewals wait for others to join them
RENEW_BATCH = 1000  # memberships asked about in one query


class CachedRoomStore:
    def __init__(
        self,
        store: RoomStore,
        *,
        member_seconds: float = 5.0,
        metrics: HubMetrics | None = None,
    ) -> None:
        self._store = store
        self._member_seconds = member_seconds
        self._metrics = metrics
        self._rooms: dict[str, Room] = {}
        self._members: dict[tuple[str, str], float] = {}  # -> remembered until
        self._due: dict[tuple[str, str], None] = {}  # renewals not asked yet, in order
        self._renewing: set[tuple[str, str]] = set()  # due or being asked
        self._renewals: asyncio.Task[None] | None = None
        self._closed = False

    async def create(self, room: Room, members: Sequence[UserRef]) -> Room:
        created = await self._store.create(room, members)
        self._remember_room(created)
        return created

    async def get(self, room_id: str) -> Room | None:
        room = self._rooms.get(room_id)
        if room is None:
            room = await self._store.get(room_id)
            if room is not None:
                self._remember_room(room)
        return room

    def known_room(self, room_id: str) -> Room | None:
        """The room if it is remembered (answered without a query)."""
        return self._rooms.get(room_id)

    def known_member(self, room_id: str, user_id: str) -> bool:
        """True if this membership is remembered: answered without a query, and a
        renewal started behind it if one is due."""
        key = (room_id, user_id)
        until = self._members.get(key)
        if until is None:
            return False
        left = until - time.monotonic()
        if left <= 0:
            return False
        if left < self._member_seconds * (1 - RENEW_AFTER):
            self._renew(key)
        return True

    async def is_member(self, room_id: str, user_id: str) -> bool:
        if self.known_member(room_id, user_id):
            return True
        key = (room_id, user_id)
        member = await self._store.is_member(room_id, user_id)
        if member:
            self._remember_member(key)
        else:
            self._members.pop(key, None)
        return member

    async def add_member(self, room_id: str, user: UserRef) -> bool:
        added = await self._store.add_member(room_id, user)
        self._remember_member((room_id, user.id))
        return added

    async def remove_member(self, room_id: str, user_id: str) -> bool:
        self._members.pop((room_id, user_id), None)
        return await self._store.remove_member(room_id, user_id)

    def forget_member(self, room_id: str, user_id: str) -> None:
        """A leave learned from another node: ask the store next time."""
        self._members.pop((room_id, user_id), None)

    async def members(self, room_id: str) -> list[UserRef]:
        return await self._store.members(room_id)

    async def rooms_of(self, user_id: str, limit: int, after: str | None) -> list[Room]:
        return await self._store.rooms_of(user_id, limit, after)

    async def public_rooms(self, limit: int, after: str | None) -> list[Room]:
        return await self._store.public_rooms(limit, after)

    async def set_read(self, room_id: str, user_id: str, seq: int) -> None:
        await self._store.set_read(room_id, user_id, seq)

    async def read_markers(self, user_id: str, room_ids: Sequence[str]) -> dict[str, int]:
        return await self._store.read_markers(user_id, room_ids)

    async def member_counts(self, room_ids: Sequence[str]) -> dict[str, int]:
        return await self._store.member_counts(room_ids)

    async def members_among(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return await self._store.members_among(pairs)

    async def close(self) -> None:
        """Stop renewing. The node closes its PostgreSQL pool right after: a renewal
        still gathering would ask a closed pool and log a failure, or be destroyed
        pending when the loop ends."""
        self._closed = True
        if self._renewals is not None:
            await stop_task(self._renewals)

    def _renew(self, key: tuple[str, str]) -> None:
        if key in self._renewing or self._closed:
            return
        self._renewing.add(key)
        self._due[key] = None
        if self._renewals is None:
            self._renewals = asyncio.get_running_loop().create_task(self._renew_due())

    async def _renew_due(self) -> None:
        try:
            while self._due:
                await asyncio.sleep(self._member_seconds * RENEW_GATHER)
                while self._due:
                    batch = list(islice(self._due, RENEW_BATCH))
                    for key in batch:
                        del self._due[key]
                    await self._ask_again(batch)
                    if len(batch) < RENEW_BATCH:
                        # What is due now fell due during that query: gather it too.
                        # Asked at once, a slow PostgreSQL would get a query as each
                        # one ended, one per few members, just when it is slow.
                        break
        finally:
            self._renewals = None

    async def _ask_again(self, keys: list[tuple[str, str]]) -> None:
        asked = time.monotonic()
        if self._metrics is not None:
            self._metrics.membership_renewals.inc(len(keys))
            self._metrics.membership_queries.inc()
        try:
            members = await self._store.members_among(keys)
        except Exception as exc:  # the entries run out as they would have; then frames ask
            log.warning(
                "membership check failed", extra={"memberships": len(keys), "error": repr(exc)}
            )
            return
        finally:
            self._renewing.difference_update(keys)
        for key in keys:
            if key not in self._members:
                continue  # a leave came meanwhile, and it wins
            if key in members:
                self._members[key] = asked + self._member_seconds
            else:
                del self._members[key]

    def _remember_room(self, room: Room) -> None:
        if len(self._rooms) >= MAX_ENTRIES:
            self._rooms.clear()
        self._rooms[room.id] = room

    def _remember_member(self, key: tuple[str, str]) -> None:
        if len(self._members) >= MAX_ENTRIES:
            self._members.clear()
        self._members[key] = time.monotonic() + self._member_seconds
