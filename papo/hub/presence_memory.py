"""In-process ``Presence`` for a single node."""

from __future__ import annotations

from papo.hub.presence import PresenceChanged
from papo.protocol.frames import UserRef


class MemoryPresence:
    def __init__(self, node_id: str = "local") -> None:
        self._node_id = node_id
        self._rooms: dict[str, dict[str, tuple[UserRef, set[str]]]] = {}
        self._users: dict[str, set[str]] = {}

    async def start(self, changed: PresenceChanged) -> None:
        """One process: nothing expires behind the hub's back, so nothing to report."""

    async def stop(self) -> None:
        self._rooms.clear()
        self._users.clear()

    async def nodes(self) -> list[str]:
        return [self._node_id]

    async def add(self, room: str, user: UserRef, connection: str) -> bool:
        members = self._rooms.setdefault(room, {})
        entry = members.setdefault(user.id, (user, set()))
        first = not entry[1]
        entry[1].add(connection)
        return first

    async def remove(self, room: str, user_id: str, connection: str) -> bool:
        members = self._rooms.get(room, {})
        entry = members.get(user_id)
        if entry is None or connection not in entry[1]:
            return False
        entry[1].discard(connection)
        if entry[1]:
            return False
        del members[user_id]
        if not members:
            self._rooms.pop(room, None)
        return True

    async def online(self, room: str) -> list[UserRef]:
        return [user for user, _ in self._rooms.get(room, {}).values()]

    async def connect(self, user_id: str, connection: str) -> bool:
        connections = self._users.setdefault(user_id, set())
        first = not connections
        connections.add(connection)
        return first

    async def disconnect(self, user_id: str, connection: str) -> bool:
        connections = self._users.get(user_id, set())
        if connection not in connections:
            return False
        connections.discard(connection)
        if connections:
            return False
        self._users.pop(user_id, None)
        return True

    async def is_online(self, user_id: str) -> bool:
        return bool(self._users.get(user_id))
