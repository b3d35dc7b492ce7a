"""Channels and fan-out: which local connections listen to what, and delivery to them.

A channel is ``room:<id>`` or ``user:<id>``. The node holds one broker subscription
per channel, however many connections listen. Each event is encoded once by its
publisher; delivery decodes the bytes to text once and queues the same string to every
listener, never awaiting any of them.
"""

from __future__ import annotations

import time

import msgspec

from papo.hub.broker import Broker
from papo.hub.connection import Connection
from papo.hub.metrics import HubMetrics
from papo.protocol.frames import Event

encoder = msgspec.json.Encoder()


def room_channel(room_id: str) -> str:
    return f"room:{room_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


def encode_event(event: Event) -> bytes:
    return encoder.encode(event)


class _Head(msgspec.Struct):
    type: str
    seq: int = 0


_head = msgspec.json.Decoder(_Head)


def replay_allows(connection: Connection, room: str, text: str) -> bool:
    """False for a live message a replay already sent to this connection.

    A message can be readable in history a moment before its live copy is published;
    a replay that read it must not let the live copy through again.
    """
    mark = connection.replayed_upto.get(room)
    if mark is None:
        return True
    head = _head.decode(text)
    if head.type != "message":
        return True
    if head.seq <= mark:
        return False
    del connection.replayed_upto[room]  # live has moved past the replay: stop checking
    return True


class Fanout:
    def __init__(self, broker: Broker, metrics: HubMetrics) -> None:
        self.broker = broker
        self.metrics = metrics
        self._listeners: dict[str, set[Connection]] = {}

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
            await self.broker.unsubscribe(channel)

    def listener_count(self, channel: str) -> int:
        return len(self._listeners.get(channel, ()))

    async def publish(self, channel: str, event: Event) -> None:
        await self.broker.publish(channel, encode_event(event))

    def deliver(self, channel: str, payload: bytes) -> None:
        """The broker's callback: queue ``payload`` to every local listener of ``channel``."""
        listeners = self._listeners.get(channel)
        if not listeners:
            return
        started = time.perf_counter()
        text = payload.decode()
        room = channel[5:] if channel.startswith("room:") else None
        delivered = 0
        for connection in tuple(listeners):
            # Only connections inside or just after a replay pay for the extra checks.
            if room is not None and (connection.catching_up or connection.replayed_upto):
                if room in connection.catching_up:
                    connection.catching_up[room].append(text)
                    continue
                if not replay_allows(connection, room, text):
                    continue
            if connection.push(text):
                delivered += 1
        self.metrics.fanout_recipients.inc(delivered)
        self.metrics.fanout_seconds.observe(time.perf_counter() - started)
