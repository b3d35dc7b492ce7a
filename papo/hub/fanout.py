"""Channels and fan-out: which local connections listen to what, and delivery to them.

A channel is ``room:<id>`` or ``user:<id>``. The node holds one broker subscription
per channel, however many connections listen. Each event is encoded once by the node
that publishes it; the broker carries it as ``<header>\n<json>``, where the header of
a room message is ``<seq> <room>`` (empty for other events), so receiving nodes order
and de-duplicate messages without decoding the JSON, and queue the same string to
every listener, never awaiting any of them.

With a broker shared by several nodes, the publishing node hands an event to its own
listeners at once and the broker carries it to the others, prefixed with the node's
8-byte origin tag; the copy the broker brings back to its publisher is recognised by
that tag and skipped. Local recipients so never wait for the round trip through Redis.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import msgspec

from papo.hub.broker import Broker
from papo.hub.connection import Connection
from papo.hub.history import History, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.sequencer import Sequencer
from papo.protocol.frames import Event, MessageEvent, RoomLeft, UserRef

encoder = msgspec.json.Encoder()
ORIGIN_BYTES = 8  # the publishing node's tag in front of payloads on a shared broker


class WriteBatches(Protocol):
    """How fan-out tells the sockets' side that several events are on their way, so each
    socket can get them in one write (``papo.server.transport.WriteBatcher``)."""

    def batch(self) -> AbstractContextManager[None]:
        """Writes made inside are held and written together when it ends."""
        ...

    def until_turn_ends(self) -> None:
        """Hold writes until this loop turn ends."""
        ...


class WriteAtOnce:
    """No batching: every write goes out at once (the hub without papo's server)."""

    def batch(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def until_turn_ends(self) -> None:
        return None


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


def encode_event(event: Event) -> bytes:
    return encoder.encode(event)


def message_event(message: Stored) -> MessageEvent:
    return MessageEvent(
        room=message.room,
        seq=message.seq,
        ts=message.ts,
        sender=UserRef(id=message.sender_id, name=message.sender_name),
        text=message.text,
        client_id=message.client_id,
        edited=message.edited,
        deleted=message.deleted,
    )


def pack(event: Event) -> bytes:
    """The broker payload: a header the receivers can route on, then the JSON event.

    ``<seq> <room>`` for a room message; ``!left <room>`` when a person left a room
    (every node unsubscribes that person's connections); empty for everything else.
    """
    body = encoder.encode(event)
    if isinstance(event, MessageEvent):
        return b"%d %s\n%s" % (event.seq, event.room.encode(), body)
    if isinstance(event, RoomLeft):
        return b"!left %s\n%s" % (event.room.encode(), body)
    return b"\n" + body


def _room_of(channel: str) -> str:
    return channel[5:] if channel.startswith("room:") else ""


def replay_allows(connection: Connection, room: str, seq: int) -> bool:
    """False for a live message (``seq`` > 0) a replay already sent to this connection.

    A message can be readable in history a moment before its live copy is published;
    a replay that read it must not let the live copy through again.
    """
    mark = connection.replayed_upto.get(room)
    if mark is None or seq == 0:
        return True
    if seq <= mark:
        return False
    del connection.replayed_upto[room]  # live has moved past the replay: stop checking
    return True


class Fanout:
    def __init__(
        self, broker: Broker, history: History, metrics: HubMetrics, *, gap_wait: float
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self._listeners: dict[str, set[Connection]] = {}
        # One node (an ordered broker): its own listeners are every listener there is.
        # A broker other nodes share echoes our publishes back: we deliver here first
        # and recognise the echo by this node's tag.
        self._here_only = broker.ordered
        # Told when a person left a room, with their channel: the hub unsubscribes them.
        self.on_left: Callable[[str, str, list[Connection]], None] = lambda *_: None
        self._origin = os.urandom(ORIGIN_BYTES // 2).hex().encode()
        self.writes: WriteBatches = WriteAtOnce()
        self.sequencer = Sequencer(
            history,
            self._emit,
            lambda message: encode_event(message_event(message)).decode(),
            metrics,
            gap_wait=0.0 if broker.ordered else gap_wait,
        )

    async def listen(self, channel: str, connection: Connection) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            listeners = self._listeners[channel] = set()
            listeners.add(connection)
            await self.broker.subscribe(channel)
        else:
            listeners.add(connection)

    async def unlisten(self, channel: str, connection: Connection) -> None:
        listeners = self._listeners.get(channel)
        if listeners is None:
            return
        listeners.discard(connection)
        if not listeners:
            del self._listeners[channel]
            self.sequencer.forget(channel)
            await self.broker.unsubscribe(channel)

    def _left(self, channel: str, room: str) -> None:
        self.on_left(channel, room, list(self._listeners.get(channel, ())))

    def channel_count(self, prefix: str) -> int:
        """How many channels starting with ``prefix`` this node listens to."""
        return sum(1 for channel in self._listeners if channel.startswith(prefix))

    def listener_count(self, channel: str) -> int:
        return len(self._listeners.get(channel, ()))

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_many(channel, (event,))

    async def publish_many(self, channel: str, events: Sequence[Event]) -> None:
        await self.publish_batches([(channel, events)])

    async def publish_batches(self, batches: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Publish each channel's events in order.

        Local listeners get a channel's several events as one batch (one write per
        socket); a single event is written to each socket at once. With a shared broker
        they get them before the round trip, and all channels go to the broker in one.
        """
        if self._here_only:
            self.hand_out(batches)
            return
        packed = [(channel, [pack(event) for event in events]) for channel, events in batches]
        for channel, payloads in packed:
            with self._batch(payloads):
                for payload in payloads:
                    self._route(channel, payload)
        origin = self._origin
        await self.broker.publish_many(
            [(channel, origin + payload) for channel, payloads in packed for payload in payloads]
        )

    def hand_out(self, batches: Sequence[tuple[str, Sequence[Event]]]) -> None:
        """Give each channel's events to this node's listeners now, without the broker.

        Only for an ``ordered`` broker: one node, whose listeners are everyone there is,
        so the round trip through the broker (encoding the header, parsing it back) is
        skipped and a sender's fan-out runs before its frame handler returns.
        """
        for channel, events in batches:
            if not self._listeners.get(channel):
                continue
            with self._batch(events):
                for event in events:
                    text = encoder.encode(event).decode()
                    if isinstance(event, MessageEvent):
                        self.sequencer.offer(channel, event.room, event.seq, text)
                        continue
                    if isinstance(event, RoomLeft):
                        self._left(channel, event.room)
                    self._emit(channel, _room_of(channel), 0, text)

    def _batch(self, items: Sequence[object]) -> AbstractContextManager[None]:
        return self.writes.batch() if len(items) > 1 else contextlib.nullcontext()

    def deliver(self, channel: str, payload: bytes) -> None:
        """The broker's callback; with a shared broker, skips this node's own echoes.
        What other nodes publish arrives as one delivery per event: those of one loop
        turn are written to each socket together."""
        if not self._here_only:
            if payload.startswith(self._origin):
                return
            payload = payload[ORIGIN_BYTES:]
            self.writes.until_turn_ends()
        self._route(channel, payload)

    def _route(self, channel: str, payload: bytes) -> None:
        """Room messages through the sequencer, the rest straight on."""
        head, _, body = payload.partition(b"\n")
        if head.startswith(b"!left "):
            self._left(channel, head[6:].decode())
            head = b""
        if head:
            seq, _, room = head.partition(b" ")
            self.sequencer.offer(channel, room.decode(), int(seq), body.decode())
            return
        self._emit(channel, _room_of(channel), 0, body.decode())

    def _emit(self, channel: str, room: str, seq: int, text: str) -> None:
        """Queue ``text`` to every local listener of ``channel``."""
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        started = time.perf_counter()
        delivered = 0
        for connection in tuple(listeners):
            # Only connections inside or just after a replay pay for the extra checks.
            if room and (connection.catching_up or connection.replayed_upto):
                held = connection.catching_up.get(room)
                if held is not None:
                    held.append((seq, text))
                    continue
                if not replay_allows(connection, room, seq):
                    continue
            if connection.push(text):
                delivered += 1
        self.metrics.fanout_recipients.inc(delivered)
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)
