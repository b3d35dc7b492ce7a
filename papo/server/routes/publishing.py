"""Server-side publishing for backends and bots: post into rooms, push to users."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

import msgspec

from papo.domains.accounts.permissions import Permission, allowed
from papo.hub.chat import ack
from papo.hub.fanout import user_channel
from papo.hub.history import Draft
from papo.protocol import frames as f
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.rest import ROOM_PARAM, UUID_PARAM, Call, Endpoint

EventName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$",
        max_length=64,
        description="A dotted event name, e.g. order.shipped",
    ),
]


class PostMessageRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    text: f.Text
    client_id: f.ClientMessageId | None = None


class MessageAckOut(msgspec.Struct, kw_only=True):
    room: str
    seq: int
    ts: float
    client_id: str
    duplicate: bool


class UserEventRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: EventName
    data: dict[str, Any] = {}


class UserEventOut(msgspec.Struct, kw_only=True):
    user: str
    online: bool


async def post_message(call: Call) -> MessageAckOut:
    body: PostMessageRequest = call.body
    hub = call.state.realtime.hub
    room_id = call.request.path_params["id"]
    room = await hub.rooms.get(room_id)
    if room is None:
        raise PapoError(ErrorCode.NOT_FOUND, f"no room {room_id}", field="id")
    sender = call.user
    privileged = allowed(sender.role, Permission.EVENTS_PUBLISH)
    if not privileged and not await hub.rooms.is_member(room_id, str(sender.user_id)):
        raise PapoError(ErrorCode.NOT_A_MEMBER, "you are not a member of this room", field="id")
    if len(body.text) > hub.limits.max_message_length:
        raise PapoError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"messages may be at most {hub.limits.max_message_length} characters",
            field="text",
        )
    client_id = body.client_id or f"rest-{secrets.token_hex(8)}"
    draft = Draft(room_id, str(sender.user_id), sender.display_name, body.text, client_id)
    try:
        stored = await hub.writers.submit(draft)
    except RuntimeError:
        raise PapoError(ErrorCode.UNAVAILABLE, "this node is shutting down; retry") from None
    return MessageAckOut(**ack(stored))


async def push_user_event(call: Call) -> UserEventOut:
    body: UserEventRequest = call.body
    hub = call.state.realtime.hub
    user_id = str(call.path_uuid("id"))
    if await call.state.realtime.directory.find(user_id) is None:
        raise PapoError(ErrorCode.NOT_FOUND, "no such user", field="id")
    sender = f.UserRef(id=str(call.user.user_id), name=call.user.display_name)
    await hub.fanout.publish(
        user_channel(user_id), f.UserEvent(event=body.event, data=body.data, sender=sender)
    )
    return UserEventOut(user=user_id, online=await hub.presence.is_online(user_id))


TAG = "publishing"
endpoints = [
    Endpoint(
        "POST",
        "/api/rooms/{id}/messages",
        post_message,
        "Post a message into a room",
        TAG,
        auth="user",
        body=PostMessageRequest,
        response=MessageAckOut,
        status=201,
        path_params={"id": ROOM_PARAM},
        errors=(ErrorCode.NOT_FOUND, ErrorCode.NOT_A_MEMBER, ErrorCode.MESSAGE_TOO_LONG),
        description="Stored and fanned out like a WebSocket send; answers once durable. "
        "Admins and bots may post to any room, others to rooms they belong to. A repeated "
        "`client_id` is acknowledged again, not stored twice.",
    ),
    Endpoint(
        "POST",
        "/api/users/{id}/events",
        push_user_event,
        "Push an event to a user",
        TAG,
        auth=Permission.EVENTS_PUBLISH,
        body=UserEventRequest,
        response=UserEventOut,
        status=202,
        path_params={"id": UUID_PARAM},
        errors=(ErrorCode.NOT_FOUND,),
        description="Every live connection of the user receives a `user.event` frame.",
    ),
]
