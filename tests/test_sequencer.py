"""Where a room's stream starts on a node that shares a broker: what its listeners see of
the room's first messages after they subscribed."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from papo.hub.history import Draft
from papo.hub.history_memory import MemoryHistory
from papo.hub.metrics import HubMetrics
from papo.hub.sequencer import Sequencer

GAP_WAIT = 0.3
CHANNEL = "room:r"


class Listeners:
    """What the node's listeners of room ``r`` are handed, in order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def emit(self, channel: str, room: str, seq: int, text: str) -> None:
        assert (channel, room) == (CHANNEL, "r")
        assert text == f"m{seq}"
        self.seqs.append(seq)


def _sequencer(history: MemoryHistory, listeners: Listeners) -> Sequencer:
    return Sequencer(
        history,
        listeners.emit,
        lambda message: f"m{message.seq}",
        HubMetrics(CollectorRegistry()),
        gap_wait=GAP_WAIT,
    )


async def _stored(history: MemoryHistory, count: int) -> None:
    await history.append([Draft("r", "u1", "U", "hi", str(n)) for n in range(count)])


async def test_a_rooms_first_message_goes_out_at_once_when_each_listener_said_its_start() -> None:
    history, listeners = MemoryHistory(), Listeners()
    sequencer = _sequencer(history, listeners)
    await _stored(history, 4)
    sequencer.coming(CHANNEL, "r", "a")
    sequencer.coming(CHANNEL, "r", "b")
    sequencer.needs_after(CHANNEL, "r", "a", 4)
    sequencer.needs_after(CHANNEL, "r", "b", 4)
    sequencer.offer(CHANNEL, "r", 5, "m5")
    assert listeners.seqs == [5], "handed out without the opening window"
    sequencer.offer(CHANNEL, "r", 4, "m4")  # a late copy of what both already had
    sequencer.offer(CHANNEL, "r", 6, "m6")
    assert listeners.seqs == [5, 6]
    await sequencer.close()


async def test_a_listener_still_joining_keeps_the_opening_window() -> None:
    history, listeners = MemoryHistory(), Listeners()
    sequencer = _sequencer(history, listeners)
    sequencer.coming(CHANNEL, "r", "a")
    sequencer.coming(CHANNEL, "r", "b")
    sequencer.needs_after(CHANNEL, "r", "a", 0)  # b has not read the room's number yet
    sequencer.offer(CHANNEL, "r", 2, "m2")
    sequencer.offer(CHANNEL, "r", 1, "m1")  # reordered between two nodes
    assert listeners.seqs == [], "held while b's start is unknown"
    await asyncio.sleep(GAP_WAIT * 2)
    assert listeners.seqs == [1, 2], "in order once the window closes"
    await sequencer.close()


async def test_a_listener_that_left_before_saying_holds_nobody_up() -> None:
    history, listeners = MemoryHistory(), Listeners()
    sequencer = _sequencer(history, listeners)
    sequencer.coming(CHANNEL, "r", "a")
    sequencer.coming(CHANNEL, "r", "b")
    sequencer.needs_after(CHANNEL, "r", "a", 0)
    sequencer.gone(CHANNEL, "r", "b")
    sequencer.offer(CHANNEL, "r", 1, "m1")
    assert listeners.seqs == [1]
    await sequencer.close()


async def test_messages_a_listener_needs_that_never_came_live_are_read_from_history() -> None:
    """A listener read 1 as the room's last; 2 and 3 were stored after that, but only 3
    reaches this node live (2's publish was lost, or is later than the gap wait).
    Started from the first message seen, the stream would skip 2 for good."""
    history, listeners = MemoryHistory(), Listeners()
    sequencer = _sequencer(history, listeners)
    await _stored(history, 1)
    sequencer.coming(CHANNEL, "r", "a")
    sequencer.needs_after(CHANNEL, "r", "a", 1)
    await _stored(history, 2)
    sequencer.offer(CHANNEL, "r", 3, "m3")
    assert listeners.seqs == [], "3 waits for the missing 2"
    await asyncio.sleep(GAP_WAIT * 2)
    assert listeners.seqs == [2, 3]
    await sequencer.close()


async def test_a_room_forgotten_here_starts_again_with_its_next_listeners() -> None:
    history, listeners = MemoryHistory(), Listeners()
    sequencer = _sequencer(history, listeners)
    sequencer.coming(CHANNEL, "r", "a")
    sequencer.needs_after(CHANNEL, "r", "a", 0)
    sequencer.forget(CHANNEL)  # the last listener left before any message came
    sequencer.coming(CHANNEL, "r", "b")  # b joins and has not read the number yet
    sequencer.offer(CHANNEL, "r", 1, "m1")
    assert listeners.seqs == [], "a's word does not stand for b"
    await asyncio.sleep(GAP_WAIT * 2)
    assert listeners.seqs == [1]
    await sequencer.close()
