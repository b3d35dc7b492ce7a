"""The hub: connections in, events out, through the ports it was given.

The node builds one ``Hub`` with its adapters; the WebSocket endpoint attaches each
authenticated connection and hands it every decoded frame through the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from papo.hub.broker import Broker
from papo.hub.connection import Connection, Principal, State, Transport
from papo.hub.dashboard import DashboardFeed
from papo.hub.deadlines import Deadlines
from papo.hub.fanout import Fanout, message_event, room_channel, user_channel
from papo.hub.history import History, Stored
from papo.hub.history_reads import SharedReads
from papo.hub.metrics import HubMetrics
from papo.hub.presence import Presence
from papo.hub.rooms import RoomStore
from papo.hub.tasks import PATIENCE_SECONDS, shutdown_step
from papo.hub.write_behind import WriteBehind
from papo.hub.writer import MessageWriter, Writer
from papo.protocol.close_codes import CloseCode
from papo.protocol.frames import Event, PresenceChanged, RoomLeft, TypingEvent, UserRef

log = logging.getLogger("papo.hub")


def _channels(room: str) -> list[str]:
    """A room's events go to its channel; a DM's to both people's own channels, so they
    follow them to every device they have online."""
    members = dm_members(room)
    if members is None:
        return [room_channel(room)]
    return [user_channel(user_id) for user_id in dict.fromkeys(members)]


def _message_batches(messages: Sequence[Stored]) -> list[tuple[str, list[Event]]]:
    """Each room's events together: a writer's batch spans rooms, and goes to the broker
    in one call."""
    by_room: dict[str, list[Event]] = {}
    for message in messages:
        by_room.setdefault(message.room, []).append(message_event(message))
    return [(channel, events) for room, events in by_room.items() for channel in _channels(room)]


@dataclass(frozen=True)
class HubLimits:
    max_outbox: int = 1024
    max_rooms_per_connection: int = 200
    max_message_length: int = 4000
    resume_limit: int = 1000
    typing_interval: float = 0.3
    frames_per_second: float = 50.0
    frame_burst: int = 200
    auth_timeout: float = 5.0
    heartbeat_seconds: float = 20.0
    token_warning_seconds: float = 60.0
    # How long a node waits for a late message before reading it from history.
    gap_wait_seconds: float = 0.05
    # How often this node publishes its counters to dashboards (0: never).
    dashboard_interval: float = 1.0


def dm_room_id(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"dm:{first}:{second}"


def dm_members(room_id: str) -> tuple[str, str] | None:
    parts = room_id.split(":")
    if len(parts) != 3 or parts[0] != "dm":
        return None
    return parts[1], parts[2]


class Hub:
    def __init__(
        self,
        *,
        broker: Broker,
        presence: Presence,
        history: History,
        rooms: RoomStore,
        metrics: HubMetrics,
        limits: HubLimits,
        node: str = "local",
    ) -> None:
        self.broker = broker
        self.presence = presence
        self.writers: Writer
        readable = history
        if broker.ordered:  # one node: it numbers, fans out, then stores
            write_behind = WriteBehind(history, self._hand_out_messages, metrics)
            self.writers, readable = write_behind, write_behind.view
        else:  # several nodes: the store numbers, then each node fans out
            self.writers = MessageWriter(history, self._publish_messages, metrics)
        self.reads = SharedReads(readable, metrics)  # concurrent resumes share queries
        self.history: History = self.reads
        self.rooms = rooms
        self.metrics = metrics
        self.limits = limits
        self.fanout = Fanout(broker, self.reads, metrics, gap_wait=limits.gap_wait_seconds)
        self.fanout.on_left = self._left_elsewhere
        self._background: set[asyncio.Task[None]] = set()
        self.connections: dict[str, Connection] = {}
        self.deadlines = Deadlines()  # every connection's keepalive and token expiry
        self.dashboard = DashboardFeed(self, node, limits.dashboard_interval)
        self.accepting = True
        self._all_gone = asyncio.Event()

    async def start(self) -> None:
        await self.history.prepare()
        await self.broker.start(self.fanout.deliver, self.fanout.sequencer.resync)
        await self.presence.start(self._presence_changed)
        await self.dashboard.start()

    async def stop(self, step_seconds: float = PATIENCE_SECONDS) -> None:
        """Each part gets ``step_seconds``: presence's clean-up waiting on a Redis that
        stopped answering must not keep the broker from being stopped after it."""
        for what, step in (
            ("dashboard", self.dashboard.stop),
            ("presence", self.presence.stop),
            ("sequencer", self.fanout.sequencer.close),
            ("history reads", self.reads.close),
            ("broker", self.broker.stop),
            ("room store", self.rooms.close),
        ):
            await shutdown_step(step(), step_seconds, what)
        self.deadlines.close()

    async def _presence_changed(self, room: str, user: UserRef, online: bool) -> None:
        """Presence learned from the shared store (a crashed node's users expiring, or
        entries restored after an outage), pushed to the room like any other change."""
        event = (
            PresenceChanged(room=room, joined=[user])
            if online
            else PresenceChanged(room=room, left=[user])
        )
        await self.fanout.publish(room_channel(room), event)

    async def left(self, user_id: str, room: str) -> None:
        """``user_id`` left ``room``: every connection of theirs, on every node, stops."""
        await self.fanout.publish(user_channel(user_id), RoomLeft(room=room))

    def _left_elsewhere(self, channel: str, room: str, listeners: list[Connection]) -> None:
        self.rooms.forget_member(room, channel.removeprefix("user:"))
        for connection in listeners:
            if room in connection.rooms:
                task = asyncio.create_task(self.unsubscribe(connection, room))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    # --- publishing ---------------------------------------------------------------------

    async def publish_to_room(self, room: str, event: Event) -> None:
        await self.fanout.publish_batches([(channel, (event,)) for channel in _channels(room)])

    async def _publish_messages(self, messages: Sequence[Stored]) -> None:
        # Duplicates (retried sends) are published again: if the first attempt stored the
        # message but could not publish it, this is where the room gets it; nodes drop
        # copies they already handed out.
        await self.fanout.publish_batches(_message_batches(messages))

    def _hand_out_messages(self, messages: Sequence[Stored]) -> None:
        self.fanout.hand_out(_message_batches(messages))

    # --- connection lifecycle -------------------------------------------------------------

    async def attach(
        self, connection_id: str, principal: Principal, transport: Transport
    ) -> Connection:
        connection = Connection(
            connection_id,
            principal,
            transport,
            max_outbox=self.limits.max_outbox,
            on_slow=self._slow_consumer,
        )
        self.connections[connection.id] = connection
        await self.presence.connect(principal.user.id, connection.id)
        await self.fanout.listen(user_channel(principal.user.id), connection)
        self.metrics.connections.inc()
        self.metrics.connections_total.inc()
        return connection

    def _slow_consumer(self, connection: Connection) -> None:
        self.metrics.slow_consumers.inc()
        self.metrics.closes.labels(str(int(CloseCode.SLOW_CONSUMER))).inc()
        log.warning("slow consumer closed", extra={"connection": connection.id})

    async def subscribe(self, connection: Connection, room: str) -> None:
        """Listen to ``room``. The caller reads the room's last number next and says so
        (``listening_from``): until every new listener has, the room's first message
        here waits the sequencer's opening window."""
        connection.rooms.add(room)
        self.writers.expect(room)
        channel = room_channel(room)
        self.fanout.sequencer.coming(channel, room, connection.id)
        await self.fanout.listen(channel, connection)
        if await self.presence.add(room, connection.principal.user, connection.id):
            await self.fanout.publish(
                channel, PresenceChanged(room=room, joined=[connection.principal.user])
            )

    def listening_from(self, connection: Connection, room: str, seq: int) -> None:
        """``connection`` subscribed to ``room``, then read ``seq`` as its last number."""
        self.fanout.sequencer.needs_after(room_channel(room), room, connection.id, seq)

    async def unsubscribe(self, connection: Connection, room: str) -> None:
        if room not in connection.rooms:
            return
        connection.rooms.discard(room)
        self.fanout.sequencer.gone(room_channel(room), room, connection.id)
        connection.catching_up.pop(room, None)
        if connection.typing_in.pop(room, None) is not None:
            await self.fanout.publish(
                room_channel(room),
                TypingEvent(room=room, user=connection.principal.user, active=False),
            )
        await self.fanout.unlisten(room_channel(room), connection)
        if await self.presence.remove(room, connection.user_id, connection.id):
            await self.fanout.publish(
                room_channel(room), PresenceChanged(room=room, left=[connection.principal.user])
            )

    async def follow(self, connection: Connection, channel: str) -> None:
        """Let a connection listen to a channel that is not a room (the dashboard)."""
        if channel not in connection.feeds:
            connection.feeds.append(channel)
            await self.fanout.listen(channel, connection)

    async def unfollow(self, connection: Connection, channel: str) -> None:
        if channel in connection.feeds:
            connection.feeds.remove(channel)
            await self.fanout.unlisten(channel, connection)

    async def detach(self, connection: Connection) -> None:
        if self.connections.pop(connection.id, None) is None:
            return
        # The person's own presence goes first: whoever sees them leave a room and then
        # asks whether they are online must hear the same answer.
        try:
            await self.presence.disconnect(connection.user_id, connection.id)
        except Exception as exc:  # the rooms below must still be cleaned up
            log.warning("cleanup failed", extra={"user": connection.user_id, "error": repr(exc)})
        for channel in list(connection.feeds):
            await self.unfollow(connection, channel)
        for room in list(connection.rooms):
            try:
                await self.unsubscribe(connection, room)
            except Exception as exc:  # one failing room must not leak the others
                log.warning("cleanup failed", extra={"room": room, "error": repr(exc)})
        await self.fanout.unlisten(user_channel(connection.user_id), connection)
        await connection.finish()
        self.metrics.connections.dec()
        if not self.connections:
            self._all_gone.set()

    def send_elsewhere(self, connection: Connection) -> None:
        """Close with 1012 after what is queued: the client reconnects to another node."""
        if connection.state is State.OPEN:
            self.metrics.closes.labels(str(int(CloseCode.SERVICE_RESTART))).inc()
            connection.close_soon(CloseCode.SERVICE_RESTART)

    async def drain(self, seconds: float) -> None:
        """Stop accepting, tell every client to reconnect elsewhere, flush writes."""
        self.accepting = False
        for connection in list(self.connections.values()):
            self.send_elsewhere(connection)
        await self.writers.drain(seconds)
        if self.connections:
            self._all_gone.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._all_gone.wait()
