"""The chat frames' handlers: rooms, DMs, messages, history, resume, presence, typing.

Each handler receives the connection and its decoded frame and returns the ``data`` of
the reply (or raises ``PapoError``). Handlers that must order their reply before live
events (join) return ``AfterReply``: the session sends the reply, then runs ``then``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from papo.hub.broker import BrokerError
from papo.hub.connection import Connection
from papo.hub.directory import Directory
from papo.hub.fanout import encode_event, message_event, replay_allows, room_channel, user_channel
from papo.hub.history import Draft, Stored
from papo.hub.hub import Hub, dm_room_id
from papo.hub.rooms import Room
from papo.hub.write_behind import NotStoredYet
from papo.protocol import frames as f
from papo.protocol.errors import ErrorCode, PapoError, validation_error
from papo.protocol.registry import LATER, Later, Registry


@dataclass(frozen=True, slots=True)
class AfterReply:
    """Reply with ``data``, then call ``then`` (e.g. release live events held back)."""

    data: Any
    then: Callable[[], None]


REPLAY_PAGE = 200


class Deferred:
    """A reply that arrives later (a send waits for durability) without blocking reads."""

    def __init__(self, future: asyncio.Future[Stored]) -> None:
        self.future = future


def ack(message: Stored) -> dict[str, Any]:
    return {
        "room": message.room,
        "seq": message.seq,
        "ts": message.ts,
        "client_id": message.client_id,
        "duplicate": message.duplicate,
    }


@contextlib.contextmanager
def _refused_until_stored() -> Iterator[None]:
    """An edit or delete of a message shown but not yet stored (one node, store down or
    slow) is refused as retryable, and changes nothing."""
    try:
        yield
    except NotStoredYet:
        raise PapoError(
            ErrorCode.UNAVAILABLE,
            "this message is not stored yet (papo cannot reach its history store); retry",
            field="seq",
        ) from None


def room_info(room: Room, *, last_seq: int = 0, unread: int = 0, members: int = 0) -> f.RoomInfo:
    return f.RoomInfo(
        id=room.id,
        kind=room.kind,
        name=room.name,
        topic=room.topic,
        last_seq=last_seq,
        unread=unread,
        members=members,
    )


class Chat:
    def __init__(self, hub: Hub, directory: Directory) -> None:
        self.hub = hub
        self.directory = directory

    # --- access ---------------------------------------------------------------------------

    async def _room(self, connection: Connection, room_id: str, *, member: bool) -> Room:
        room = await self.hub.rooms.get(room_id)
        if room is None:
            raise PapoError(ErrorCode.NOT_FOUND, f"no room {room_id}", field="room")
        if room.kind == "public" and not member:
            return room
        if not await self.hub.rooms.is_member(room_id, connection.user_id):
            raise PapoError(ErrorCode.NOT_A_MEMBER, f"join {room_id} first", field="room")
        return room

    def _check_room_budget(self, connection: Connection, room_id: str) -> None:
        if (
            room_id not in connection.rooms
            and len(connection.rooms) >= self.hub.limits.max_rooms_per_connection
        ):
            raise PapoError(
                ErrorCode.TOO_MANY_ROOMS,
                f"a connection may be in at most {self.hub.limits.max_rooms_per_connection} "
                "rooms; leave one first",
                field="room",
            )

    # --- rooms ----------------------------------------------------------------------------

    async def create(self, connection: Connection, frame: f.RoomCreate) -> f.RoomInfo:
        room = Room(
            id=f"r_{secrets.token_hex(8)}",
            kind=frame.visibility,
            name=frame.name.strip() or "room",
            topic=frame.topic,
            created_by=connection.user_id,
            created_at=datetime.now(UTC),
        )
        await self.hub.rooms.create(room, [connection.principal.user])
        return room_info(room, members=1)

    async def join(self, connection: Connection, frame: f.RoomJoin) -> AfterReply:
        room = await self.hub.rooms.get(frame.room)
        if room is None:
            raise PapoError(ErrorCode.NOT_FOUND, f"no room {frame.room}", field="room")
        if room.kind == "public":
            await self.hub.rooms.add_member(room.id, connection.principal.user)
        elif not await self.hub.rooms.is_member(room.id, connection.user_id):
            raise PapoError(
                ErrorCode.NOT_A_MEMBER,
                "this room is private: ask a member to invite you",
                field="room",
            )
        self._check_room_budget(connection, room.id)
        connection.catching_up[room.id] = []
        try:
            await self.hub.subscribe(connection, room.id)
            recent = (
                await self.hub.history.before(room.id, None, frame.history) if frame.history else []
            )
            # The newest page ends at the room's last sequence: no second query for it.
            last_seq = (
                recent[-1].seq if recent else (await self.hub.history.last_seqs([room.id]))[room.id]
            )
            self.hub.listening_from(connection, room.id, last_seq)
            online = await self.hub.presence.online(room.id)
        except BaseException:
            self._flush(connection, room.id, sent_up_to=0)
            raise
        sent_up_to = recent[-1].seq if recent else 0
        data = {
            "room": room_info(room, last_seq=last_seq),
            "history": [message_event(m) for m in recent],
            "online": online,
        }
        return AfterReply(data, lambda: self._flush(connection, room.id, sent_up_to=sent_up_to))

    def _flush(self, connection: Connection, room: str, *, sent_up_to: int) -> None:
        """Release live events held during a replay, minus messages already sent."""
        buffered = connection.catching_up.pop(room, [])
        if sent_up_to > 0:
            connection.replayed_upto[room] = sent_up_to
        with self.hub.fanout.writes.batch():
            for seq, text in buffered:
                if replay_allows(connection, room, seq):
                    connection.push(text)

    async def leave(self, connection: Connection, frame: f.RoomLeave) -> dict[str, Any]:
        room = await self._room(connection, frame.room, member=True)
        if room.kind == "dm":
            raise PapoError(ErrorCode.CONFLICT, "direct conversations cannot be left", field="room")
        await self.hub.unsubscribe(connection, room.id)
        await self.hub.rooms.remove_member(room.id, connection.user_id)
        # The leave is stored either way; if the notice cannot go out, other nodes'
        # membership caches still expire within seconds.
        with contextlib.suppress(BrokerError):
            await self.hub.left(connection.user_id, room.id)
        return {"room": room.id, "left": True}

    async def invite(self, connection: Connection, frame: f.RoomInvite) -> dict[str, Any]:
        room = await self._room(connection, frame.room, member=True)
        if room.kind == "dm":
            raise PapoError(
                ErrorCode.CONFLICT, "direct conversations have two members", field="room"
            )
        user = await self.directory.find(frame.user)
        if user is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such user", field="user")
        added = await self.hub.rooms.add_member(room.id, user)
        if added:
            await self.hub.fanout.publish(
                user_channel(user.id),
                f.RoomInvited(room=room_info(room), by=connection.principal.user),
            )
        return {"room": room.id, "user": user.id, "added": added}

    async def list_rooms(self, connection: Connection, frame: f.RoomList) -> dict[str, Any]:
        if frame.scope == "mine":
            rooms = await self.hub.rooms.rooms_of(connection.user_id, frame.limit + 1, frame.cursor)
        else:
            rooms = await self.hub.rooms.public_rooms(frame.limit + 1, frame.cursor)
        page = rooms[: frame.limit]
        ids = [room.id for room in page]
        last = await self.hub.history.last_seqs(ids)
        read = await self.hub.rooms.read_markers(connection.user_id, ids) if ids else {}
        counts = await self.hub.rooms.member_counts(ids) if ids else {}
        items = [
            room_info(
                room,
                last_seq=last[room.id],
                unread=max(0, last[room.id] - read.get(room.id, 0)) if frame.scope == "mine" else 0,
                members=counts.get(room.id, 0),
            )
            for room in page
        ]
        return {"items": items, "next_cursor": page[-1].id if len(rooms) > frame.limit else None}

    async def members(self, connection: Connection, frame: f.RoomMembers) -> dict[str, Any]:
        room = await self._room(connection, frame.room, member=False)
        return {"room": room.id, "members": await self.hub.rooms.members(room.id)}

    async def open_dm(self, connection: Connection, frame: f.DmOpen) -> f.RoomInfo:
        if frame.user == connection.user_id:
            raise validation_error("user", "a direct conversation needs another user")
        other = await self.directory.find(frame.user)
        if other is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such user", field="user")
        me = connection.principal.user
        room = Room(
            id=dm_room_id(me.id, other.id),
            kind="dm",
            name=f"{me.name} & {other.name}",
            topic="",
            created_by=me.id,
            created_at=datetime.now(UTC),
        )
        room = await self.hub.rooms.create(room, [me, other])
        last = await self.hub.history.last_seqs([room.id])
        return room_info(room, last_seq=last[room.id], members=2)

    # --- messages -------------------------------------------------------------------------

    def send_now(self, connection: Connection, frame: f.MessageSend) -> Deferred | Later:
        """``send`` without a task, when the room store answers for the room and the
        membership without waiting: the common case, a member talking, handled as the
        frame is read."""
        rooms = self.hub.rooms
        if rooms.known_room(frame.room) is None:
            return LATER
        self._check_length(frame)
        if not rooms.known_member(frame.room, connection.user_id):
            return LATER
        return self._submit(connection, frame)

    async def send(self, connection: Connection, frame: f.MessageSend) -> Deferred:
        self._check_length(frame)
        await self._room(connection, frame.room, member=True)
        return self._submit(connection, frame)

    def _check_length(self, frame: f.MessageSend) -> None:
        if len(frame.text) > self.hub.limits.max_message_length:
            raise PapoError(
                ErrorCode.MESSAGE_TOO_LONG,
                f"messages may be at most {self.hub.limits.max_message_length} characters",
                field="text",
            )

    def _submit(self, connection: Connection, frame: f.MessageSend) -> Deferred:
        if not self.hub.broker.ready:
            raise PapoError(
                ErrorCode.UNAVAILABLE,
                "papo cannot reach its message bus right now; retry with the same client_id",
            )
        user = connection.principal.user
        draft = Draft(frame.room, user.id, user.name, frame.text, frame.client_id)
        try:
            return Deferred(self.hub.writers.submit(draft))
        except RuntimeError:
            raise PapoError(ErrorCode.UNAVAILABLE, "this node is shutting down; retry") from None

    async def edit(self, connection: Connection, frame: f.MessageEdit) -> dict[str, Any]:
        await self._room(connection, frame.room, member=True)
        with _refused_until_stored():
            edited = await self.hub.history.edit(
                frame.room, frame.seq, connection.user_id, frame.text
            )
        if edited is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such message of yours", field="seq")
        await self.hub.publish_to_room(
            frame.room,
            f.MessageEdited(
                room=frame.room, seq=frame.seq, text=frame.text, by=connection.principal.user
            ),
        )
        return {"room": frame.room, "seq": frame.seq}

    async def delete(self, connection: Connection, frame: f.MessageDelete) -> dict[str, Any]:
        await self._room(connection, frame.room, member=True)
        with _refused_until_stored():
            deleted = await self.hub.history.delete(frame.room, frame.seq, connection.user_id)
        if deleted is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such message of yours", field="seq")
        await self.hub.publish_to_room(
            frame.room,
            f.MessageDeleted(room=frame.room, seq=frame.seq, by=connection.principal.user),
        )
        return {"room": frame.room, "seq": frame.seq}

    async def history(self, connection: Connection, frame: f.History) -> dict[str, Any]:
        room = await self._room(connection, frame.room, member=False)
        messages = await self.hub.history.before(room.id, frame.before, frame.limit)
        return {
            "room": room.id,
            "messages": [message_event(m) for m in messages],
            "has_more": bool(messages) and messages[0].seq > 1,
        }

    async def resume(self, connection: Connection, frame: f.Resume) -> dict[str, Any]:
        rooms = list(frame.rooms.items())
        for room_id, _ in rooms:
            await self._room(connection, room_id, member=True)
            self._check_room_budget(connection, room_id)
        report: dict[str, Any] = {}
        for room_id, after in rooms:
            report[room_id] = await self._replay(connection, room_id, after)
        return {"rooms": report}

    async def _replay(self, connection: Connection, room: str, after: int) -> dict[str, Any]:
        connection.catching_up[room] = []
        sent_up_to = after
        replayed = 0
        last = 0
        try:
            if room not in connection.rooms:
                await self.hub.subscribe(connection, room)
            last = (await self.hub.history.last_seqs([room]))[room]
            self.hub.listening_from(connection, room, last)
            if after > last:  # it saw messages history lacks: lost by a node that died
                self.hub.writers.saw(room, after)
            missed = max(0, last - after)
            if missed > self.hub.limits.resume_limit:
                connection.push(
                    encode_event(f.ResumeReset(room=room, last_seq=last, missed=missed)).decode()
                )
                sent_up_to = last  # the client reloads history up to here itself
                return {"replayed": 0, "last_seq": last, "reset": True}
            while sent_up_to < last:
                page = await self.hub.history.after(room, sent_up_to, REPLAY_PAGE)
                if not page:
                    break
                with self.hub.fanout.writes.batch():  # a page reaches the socket in one write
                    for message in page:
                        connection.push(encode_event(message_event(message)).decode())
                replayed += len(page)
                sent_up_to = page[-1].seq
            return {"replayed": replayed, "last_seq": max(last, sent_up_to), "reset": False}
        finally:
            self._flush(connection, room, sent_up_to=max(sent_up_to, last))

    async def read(self, connection: Connection, frame: f.Read) -> dict[str, Any]:
        await self._room(connection, frame.room, member=True)
        last = (await self.hub.history.last_seqs([frame.room]))[frame.room]
        await self.hub.rooms.set_read(frame.room, connection.user_id, min(frame.seq, last))
        return {
            "room": frame.room,
            "read": min(frame.seq, last),
            "unread": max(0, last - frame.seq),
        }

    # --- presence and typing -------------------------------------------------------------

    async def typing(self, connection: Connection, frame: f.Typing) -> dict[str, Any]:
        if frame.room not in connection.rooms:
            raise PapoError(ErrorCode.NOT_A_MEMBER, f"join {frame.room} first", field="room")
        now = time.monotonic()
        previous = connection.typing_in.get(frame.room)
        if (
            frame.active
            and previous is not None
            and now - previous < self.hub.limits.typing_interval
        ):
            raise PapoError(
                ErrorCode.RATE_LIMITED,
                "typing updates are limited; keep sending every few seconds",
                retry_after=self.hub.limits.typing_interval,
            )
        if frame.active:
            connection.typing_in[frame.room] = now
        elif connection.typing_in.pop(frame.room, None) is None:
            return {"room": frame.room, "active": False}
        await self.hub.fanout.publish(
            room_channel(frame.room),
            f.TypingEvent(room=frame.room, user=connection.principal.user, active=frame.active),
        )
        return {"room": frame.room, "active": frame.active}

    async def presence(self, connection: Connection, frame: f.PresenceQuery) -> dict[str, Any]:
        room = await self._room(connection, frame.room, member=False)
        return {"room": room.id, "online": await self.hub.presence.online(room.id)}

    async def user_presence(
        self, connection: Connection, frame: f.UserPresenceQuery
    ) -> dict[str, Any]:
        return {"user": frame.user, "online": await self.hub.presence.is_online(frame.user)}

    def register(self, registry: Registry[Connection]) -> None:
        entries: list[tuple[type[f.Request], Any, str]] = [
            (
                f.RoomCreate,
                self.create,
                "Create a public or private room; you are its first member.",
            ),
            (
                f.RoomJoin,
                self.join,
                "Join a room and receive its recent history and who is online.",
            ),
            (f.RoomLeave, self.leave, "Leave a room (membership ends, presence updates)."),
            (
                f.RoomInvite,
                self.invite,
                "Add a user to a room you are in; they get `room.invited`.",
            ),
            (f.RoomList, self.list_rooms, "Your rooms with unread counts, or public rooms."),
            (f.RoomMembers, self.members, "Members of a room."),
            (f.DmOpen, self.open_dm, "Open the direct conversation with a user."),
            (f.MessageSend, self.send, "Send a message; the reply comes once it is durable."),
            (f.MessageEdit, self.edit, "Edit one of your messages."),
            (f.MessageDelete, self.delete, "Delete one of your messages."),
            (f.History, self.history, "Page backwards through a room's messages."),
            (f.Resume, self.resume, "Replay what was missed per room, then continue live."),
            (f.Read, self.read, "Move your read marker; unread counts follow it."),
            (f.Typing, self.typing, "Start or stop the typing indicator in a room."),
            (f.PresenceQuery, self.presence, "Who is online in a room."),
            (f.UserPresenceQuery, self.user_presence, "Whether a user is online."),
        ]
        for schema, handler, summary in entries:
            now = self.send_now if schema is f.MessageSend else None
            registry.register(schema, handler, summary=summary, now=now)
