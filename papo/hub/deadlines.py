"""Every connection's deadlines on one loop timer.

A node keeps two deadlines per connection: its keepalive (the next ping, the pong it
waits for, or the grace of its close handshake) and its access token's expiry. As loop
timers, each cost about 680 bytes and four objects the cycle collector keeps walking
(the timer handle, uvloop's timer under it, a copy of the context and the bound
callback): an eighth of an idle connection's memory, and a fifth of what every full
pass of the collector walks while the loop, and so every fan-out, waits for it.

Here a deadline is an entry in a slot of ``resolution`` seconds, and a slot is a plain
dict keyed by its owners: an entry costs a dict slot, not objects. One loop timer is
armed for the earliest slot. A deadline fires at its time or up to ``resolution``
later, never before: keepalives, close grace periods and token expiries are seconds
long, and a few hundredths more do not change what any of them means.

Clients that connected together come due together (a node's clients reconnect within
seconds of its restart, and each gets its next ping a heartbeat later): at most
``TURN_OWNERS`` are handled per turn of the loop, so a slot of thousands of pings
does not hold up every fan-out until the last one is written.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections import deque
from typing import Protocol

log = logging.getLogger("papo.hub")

RESOLUTION_SECONDS = 0.05
TURN_OWNERS = 100  # deadlines handled before the loop gets a turn (for its I/O)
# uvloop rounds its timers to the millisecond, so a slot's timer may run a little early.
_TIMER_SLACK = 0.002


class Due(Protocol):
    """What has a deadline: one at a time, and knows itself what is due when it comes."""

    deadline_slot: int | None

    def deadline_due(self) -> None: ...


class Deadlines:
    def __init__(self, resolution: float = RESOLUTION_SECONDS) -> None:
        self.resolution = resolution
        self._slots: dict[int, dict[Due, None]] = {}
        self._order: list[int] = []  # the slots' numbers, as a heap
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self._due: deque[tuple[Due, int]] = deque()  # taken from due slots, not yet handled
        self._resuming: asyncio.Handle | None = None

    def __len__(self) -> int:
        """Deadlines waiting (an owner's replaced or cancelled one no longer counts)."""
        waiting = sum(
            1 for slot, owners in self._slots.items() for o in owners if o.deadline_slot == slot
        )
        return waiting + sum(1 for owner, slot in self._due if owner.deadline_slot == slot)

    def set_in(self, owner: Due, seconds: float) -> None:
        """``owner.deadline_due()`` in ``seconds``, instead of any deadline it had."""
        loop = asyncio.get_running_loop()
        self.cancel(owner)
        slot = math.ceil((loop.time() + max(0.0, seconds)) / self.resolution)
        owners = self._slots.get(slot)
        if owners is None:
            owners = self._slots[slot] = {}
            heapq.heappush(self._order, slot)
        owners[owner] = None
        owner.deadline_slot = slot
        if self._timer_slot is None or slot < self._timer_slot:
            self._arm(loop, slot)

    def cancel(self, owner: Due) -> None:
        slot = owner.deadline_slot
        if slot is None:
            return
        owner.deadline_slot = None
        owners = self._slots.get(slot)
        if owners is not None:
            # The slot itself stays until its time: taking it out of the heap would
            # cost a search, and its timer finds it empty.
            owners.pop(owner, None)

    def close(self) -> None:
        """Forget every deadline: the node is stopping."""
        if self._timer is not None:
            self._timer.cancel()
        if self._resuming is not None:
            self._resuming.cancel()
        self._timer = self._timer_slot = self._resuming = None
        for owners in self._slots.values():
            for owner in owners:
                owner.deadline_slot = None
        for owner, _ in self._due:
            owner.deadline_slot = None
        self._slots.clear()
        self._order.clear()
        self._due.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_slot = slot
        self._timer = loop.call_at(slot * self.resolution, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_slot = None
        loop = asyncio.get_running_loop()
        reached = (loop.time() + _TIMER_SLACK) / self.resolution
        while self._order and self._order[0] <= reached:
            slot = heapq.heappop(self._order)
            self._due.extend((owner, slot) for owner in self._slots.pop(slot, {}))
        if self._resuming is None:  # else the turn already asked for goes on with them
            self._handle_due()
        if self._order:
            self._arm(loop, self._order[0])

    def _handle_due(self) -> None:
        self._resuming = None
        due = self._due
        for _ in range(min(TURN_OWNERS, len(due))):
            owner, slot = due.popleft()
            if owner.deadline_slot != slot:
                continue  # cancelled or moved by an owner handled before it
            owner.deadline_slot = None
            try:
                owner.deadline_due()
            except Exception:  # one connection's failure must not stop the others'
                log.exception("a deadline's handler failed")
        if due and self._resuming is None:
            self._resuming = asyncio.get_running_loop().call_soon(self._handle_due)
