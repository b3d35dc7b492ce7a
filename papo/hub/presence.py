"""The ``Presence`` port: who is online, per room and per user, across every node.

Contract:
- Entries are per connection; a user is online in a room while at least one of their
  connections is there, so ``add``/``remove`` report only the edges (first in, last out).
- ``add``/``remove``/``connect``/``disconnect`` never raise: an adapter that cannot
  reach its store keeps the entry locally and reconciles later, reporting the edges it
  then discovers through the ``changed`` callback given to ``start``.
- Adapters shared between nodes expire a crashed node's entries within their TTL and
  report each user who thereby left a room through ``changed``.
- Reads (``online``, ``is_online``, ``nodes``) raise ``BrokerError`` when the shared store
  cannot answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from papo.protocol.frames import UserRef

# (room, user, online): an edge the adapter learned about by itself.
PresenceChanged = Callable[[str, UserRef, bool], Awaitable[None]]


class Presence(Protocol):
    async def start(self, changed: PresenceChanged) -> None: ...

    async def stop(self) -> None: ...

    async def add(self, room: str, user: UserRef, connection: str) -> bool:
        """Record the connection in the room; True when the user just came online there."""
        ...

    async def remove(self, room: str, user_id: str, connection: str) -> bool:
        """Forget the connection; True when the user has no connection left in the room."""
        ...

    async def online(self, room: str) -> list[UserRef]: ...

    async def connect(self, user_id: str, connection: str) -> bool:
        """True when this is the user's first live connection."""
        ...

    async def disconnect(self, user_id: str, connection: str) -> bool:
        """True when that was the user's last live connection."""
        ...

    async def is_online(self, user_id: str) -> bool: ...

    async def nodes(self) -> list[str]:
        """Ids of the nodes currently alive (this one included)."""
        ...
