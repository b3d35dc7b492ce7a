"""The ``Presence`` port: who is online, per room and per user.

Contract:
- Entries are per connection; a user is online in a room while at least one of their
  connections is there, so ``add``/``remove`` report only the edges (first in, last out).
- Adapters shared between nodes expire a crashed node's entries within their TTL.
"""

from __future__ import annotations

from typing import Protocol

from papo.protocol.frames import UserRef


class Presence(Protocol):
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
