"""Per node, per stream: room messages handed to local listeners in sequence order, once.

With several nodes, two of them can store consecutive messages of one room (5 on node
A, 6 on node B) and publish them in the other order; a broker outage can swallow a
publish altogether. Every node therefore passes room messages through a sequencer
before fan-out. A stream is ``(channel, room)``: a room's own channel, or a person's
channel carrying a DM. Per stream it remembers the last sequence handed out:

- the next number goes straight through (the common case: one dict lookup);
- a number at or below it is a republished duplicate and is dropped;
- a number past a gap is held; if the missing ones have not arrived after
  ``gap_wait`` seconds they are read from history (a published message was stored
  first, and sequences are gapless, so history has every lower number).

Where a stream starts: a listener joining or resuming a room reads the room's last
number after it subscribed, and needs every message after it. When every listener of a
room here has said so (``coming``, then ``needs_after``) before the room's first
message arrives, the stream starts after the lowest of those numbers and that message
goes straight through (or, past a gap, waits ``gap_wait`` for the missing ones and then
reads them from history, like any gap). Otherwise, with a listener's number still
unknown, the stream opens a ``gap_wait`` window and starts from the lowest number seen
in it, so messages reordered right at subscription time are still handed out in order.
With an ``ordered`` broker (one node) nothing is ever held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from papo.hub.history import History, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import stop_tasks

log = logging.getLogger("papo.hub")

Emit = Callable[[str, str, int, str], None]
Encode = Callable[[Stored], str]

FILL_PAGE = 500
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class _Opening:
    """A room's listeners on this node before its stream exists."""

    pending: set[str] = field(default_factory=set)  # listeners whose start is not known yet
    floor: int | None = None  # the lowest number after which a listener needs messages


@dataclass(slots=True)
class _Stream:
    last: int | None = None  # None while the opening window is collecting
    held: dict[int, str] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    filling: bool = False


class Sequencer:
    def __init__(
        self,
        history: History,
        emit: Emit,
        encode: Encode,
        metrics: HubMetrics,
        *,
        gap_wait: float,
    ) -> None:
        self._history = history
        self._emit = emit
        self._encode = encode
        self._metrics = metrics
        self.gap_wait = gap_wait
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._openings: dict[tuple[str, str], _Opening] = {}
        self._rooms_of: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def coming(self, channel: str, room: str, listener: str) -> None:
        """``listener`` subscribed to ``room`` and will say which messages it needs."""
        key = (channel, room)
        if self.gap_wait <= 0 or key in self._streams:
            return
        opening = self._openings.get(key)
        if opening is None:
            opening = self._openings[key] = _Opening()
            self._rooms_of.setdefault(channel, set()).add(room)
        opening.pending.add(listener)

    def needs_after(self, channel: str, room: str, listener: str, seq: int) -> None:
        """``listener`` read ``seq`` as the room's last number after it subscribed: it
        needs every message after it, and none before."""
        opening = self._openings.get((channel, room))
        if opening is None or listener not in opening.pending:
            return  # the stream is already running, or the listener is not one we wait for
        opening.pending.discard(listener)
        opening.floor = seq if opening.floor is None else min(opening.floor, seq)

    def gone(self, channel: str, room: str, listener: str) -> None:
        """``listener`` left before saying what it needs: it needs nothing."""
        opening = self._openings.get((channel, room))
        if opening is not None:
            opening.pending.discard(listener)

    def offer(self, channel: str, room: str, seq: int, text: str) -> None:
        key = (channel, room)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream()
            self._rooms_of.setdefault(channel, set()).add(room)
            opening = self._openings.pop(key, None)
            if self.gap_wait <= 0:
                stream.last = seq - 1
            elif opening is not None and not opening.pending and opening.floor is not None:
                stream.last = opening.floor  # every listener said what it needs
            else:
                stream.held[seq] = text
                stream.timer = asyncio.get_running_loop().call_later(self.gap_wait, self._open, key)
                return
        last = stream.last
        if last is None:
            stream.held.setdefault(seq, text)
            return
        if seq <= last or seq in stream.held:
            self._metrics.duplicates_dropped.inc()
            return
        if seq == last + 1 and not stream.filling:
            stream.last = seq
            self._emit(channel, room, seq, text)
            if stream.held:
                self._release(key, stream)
            return
        stream.held[seq] = text
        self._arm(key, stream, self.gap_wait)

    def forget(self, channel: str) -> None:
        """The node stopped listening to ``channel``: drop its streams."""
        for room in self._rooms_of.pop(channel, ()):
            self._openings.pop((channel, room), None)
            stream = self._streams.pop((channel, room), None)
            if stream is not None and stream.timer is not None:
                stream.timer.cancel()

    def resync(self) -> None:
        """After a broker outage: fetch, per stream, whatever history has past its last."""
        for key, stream in self._streams.items():
            if stream.last is not None:
                self._arm(key, stream, 0)

    async def close(self) -> None:
        for stream in self._streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
        await stop_tasks(self._tasks)

    # --- internals ---------------------------------------------------------------------------

    def _open(self, key: tuple[str, str]) -> None:
        stream = self._streams.get(key)
        if stream is None:
            return
        stream.timer = None
        stream.last = min(stream.held) - 1
        self._release(key, stream)

    def _release(self, key: tuple[str, str], stream: _Stream) -> None:
        """Hand out held messages that are now next in line; re-arm if a gap remains."""
        assert stream.last is not None
        while stream.held and (stream.last + 1) in stream.held:
            stream.last += 1
            self._emit(key[0], key[1], stream.last, stream.held.pop(stream.last))
        for seq in [s for s in stream.held if s <= stream.last]:
            del stream.held[seq]
        if stream.held:
            self._arm(key, stream, self.gap_wait)

    def _arm(self, key: tuple[str, str], stream: _Stream, delay: float) -> None:
        if stream.timer is None and not stream.filling:
            stream.timer = asyncio.get_running_loop().call_later(delay, self._start_fill, key)

    def _start_fill(self, key: tuple[str, str]) -> None:
        stream = self._streams.get(key)
        if stream is None:
            return
        stream.timer = None
        stream.filling = True
        task = asyncio.create_task(self._fill(key, stream), name=f"papo-gap-fill-{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fill(self, key: tuple[str, str], stream: _Stream) -> None:
        channel, room = key
        try:
            while True:
                assert stream.last is not None
                upto = min(stream.held) - 1 if stream.held else None
                if upto is not None and upto <= stream.last:
                    break
                wanted = FILL_PAGE if upto is None else min(FILL_PAGE, upto - stream.last)
                page = await self._history.after(room, stream.last, wanted)
                page = [m for m in page if upto is None or m.seq <= upto]
                if not page or page[0].seq != stream.last + 1:
                    if upto is not None:
                        # History lacks the missing numbers: never stall the stream on it.
                        log.warning(
                            "sequence gap not in history; skipped",
                            extra={"room": room, "after": stream.last, "upto": upto},
                        )
                        stream.last = upto
                    break
                for message in page:
                    if message.seq != stream.last + 1:
                        break
                    stream.last = message.seq
                    self._emit(channel, room, message.seq, self._encode(message))
                    self._metrics.gap_fills.inc()
                if upto is None and len(page) < wanted:
                    break
        except Exception as exc:
            log.warning("gap fill failed; retrying", extra={"room": room, "error": repr(exc)})
            stream.filling = False
            if self._streams.get(key) is stream:
                self._arm(key, stream, RETRY_SECONDS)
            return
        stream.filling = False
        if self._streams.get(key) is stream:
            self._release(key, stream)
