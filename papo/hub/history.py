"""The ``History`` port: durable, sequenced messages per room.

Contract:
- ``append`` stores drafts durably before returning. Each new message gets the next
  sequence number of its room: numbers only grow and leave no gaps. One call may hold
  drafts for many rooms (the writer commits every room's waiting drafts together); the
  drafts of one room are numbered in the order given.
- Idempotency: a draft whose ``(room, sender_id, client_id)`` was stored before is not
  stored again; the earlier message is returned with ``duplicate=True``.
- ``insert`` stores messages a node numbered itself: on one node (an ``ordered``
  broker) the node is the only writer of its rooms' numbers, so it numbers, fans out
  and then stores (see ``hub/write_behind.py``). The same idempotency holds: a message
  whose draft key was stored before under another number comes back as that earlier
  message with ``duplicate=True`` (its own number stays unused); one whose number is
  held by another message (a second writer numbering the room) comes back as None.
- Reads return messages in ascending sequence order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Draft:
    room: str
    sender_id: str
    sender_name: str
    text: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Stored:
    room: str
    seq: int
    ts: float
    sender_id: str
    sender_name: str
    text: str
    client_id: str
    edited: bool = False
    deleted: bool = False
    duplicate: bool = False


class History(Protocol):
    async def prepare(self) -> None:
        """Create indexes and anything else the adapter needs; idempotent."""
        ...

    async def append(self, drafts: Sequence[Draft]) -> list[Stored]:
        """Store ``drafts`` (of any rooms) and return one ``Stored`` per draft, in order."""
        ...

    async def insert(self, messages: Sequence[Stored]) -> list[Stored | None]:
        """Store already numbered ``messages`` durably, in order; one result per message:
        itself, an earlier message with its draft key, or None if its number is taken."""
        ...

    async def after(self, room: str, seq: int, limit: int) -> list[Stored]:
        """Messages with a sequence above ``seq``, oldest first, at most ``limit``."""
        ...

    async def before(self, room: str, seq: int | None, limit: int) -> list[Stored]:
        """The ``limit`` messages just below ``seq`` (or the newest), oldest first."""
        ...

    async def last_seqs(self, rooms: Sequence[str]) -> dict[str, int]:
        """The highest sequence of each room (0 for rooms without messages)."""
        ...

    async def edit(self, room: str, seq: int, sender_id: str, text: str) -> Stored | None:
        """Replace the text of the sender's own message; None if it is not theirs."""
        ...

    async def delete(self, room: str, seq: int, sender_id: str) -> Stored | None:
        """Mark the sender's own message deleted (its text is dropped)."""
        ...
