"""The ``Directory`` port: the hub's read-only view of who exists.

The hub needs a user's display name to open a DM or invite them; accounts live in
another layer, so the node passes in whatever answers this question.
"""

from __future__ import annotations

from typing import Protocol

from papo.protocol.frames import UserRef


class Directory(Protocol):
    async def find(self, user_id: str) -> UserRef | None:
        """The active (not disabled) user with this id, or None."""
        ...


class SeenDirectory:
    """For a node without accounts: the users that have connected since start-up."""

    def __init__(self) -> None:
        self._seen: dict[str, UserRef] = {}

    def remember(self, user: UserRef) -> None:
        self._seen[user.id] = user

    async def find(self, user_id: str) -> UserRef | None:
        return self._seen.get(user_id)
