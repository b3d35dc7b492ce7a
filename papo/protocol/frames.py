"""Chat frames: every client request and server event of the core, defined once.

Each ``Struct`` validates what arrives, encodes what leaves and generates
``docs/protocol.md`` and ``docs/protocol.schema.json``. Client frames share
``Request`` (a ``type`` tag and an optional correlation ``id``); server events share
``Event`` and never carry a request id.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1
MAX_TEXT_LENGTH = 16_000  # hard cap; PAPO_MAX_MESSAGE_LENGTH may lower it

CorrelationId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | int
RoomId = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,80}$", description="A room id from papo")
]
UserId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        description="A user id (UUID)",
    ),
]
Seq = Annotated[int, msgspec.Meta(ge=0, description="A per-room sequence number")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
ClientMessageId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        description="Chosen by the client; a retried send with the same id is stored once",
    ),
]
RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=80)]
Topic = Annotated[str, msgspec.Meta(max_length=500)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
PageSize = Annotated[int, msgspec.Meta(ge=1, le=200)]


class Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    """Base of client frames: ``id`` is echoed in the one reply the frame gets."""

    id: CorrelationId | None = None


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of server events: pushed as things happen, never a reply."""


# --- client frames -----------------------------------------------------------------


class Auth(Request, tag="auth"):
    """Authenticate on a connection opened without a token (within 5 seconds)."""

    token: Token


class AuthRefresh(Request, tag="auth.refresh"):
    """Replace the connection's access token before it expires."""

    token: Token


class Ping(Request, tag="ping"):
    """Application-level liveness check; the reply carries the server time."""


class RoomCreate(Request, tag="room.create"):
    name: RoomName
    topic: Topic = ""
    visibility: Literal["public", "private"] = "public"


class RoomJoin(Request, tag="room.join"):
    """Join (public, or private when invited) and subscribe; replies with recent history."""

    room: RoomId
    history: Annotated[int, msgspec.Meta(ge=0, le=200)] = 50


class RoomLeave(Request, tag="room.leave"):
    room: RoomId


class RoomInvite(Request, tag="room.invite"):
    room: RoomId
    user: UserId


class RoomList(Request, tag="room.list"):
    scope: Literal["mine", "public"] = "mine"
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    limit: PageSize = 50


class RoomMembers(Request, tag="room.members"):
    room: RoomId


class DmOpen(Request, tag="dm.open"):
    """Open (or find) the direct-message room with a user."""

    user: UserId


class MessageSend(Request, tag="message.send"):
    room: RoomId
    text: Text
    client_id: ClientMessageId


class MessageEdit(Request, tag="message.edit"):
    room: RoomId
    seq: Seq
    text: Text


class MessageDelete(Request, tag="message.delete"):
    room: RoomId
    seq: Seq


class History(Request, tag="history"):
    """Messages older than ``before`` (or the newest), newest last."""

    room: RoomId
    before: Seq | None = None
    limit: PageSize = 50


class Resume(Request, tag="resume"):
    """After a reconnect: the last sequence seen per room. Missed messages follow."""

    rooms: dict[RoomId, Seq]


class Read(Request, tag="read"):
    """Everything up to ``seq`` in ``room`` has been read."""

    room: RoomId
    seq: Seq


class Typing(Request, tag="typing"):
    room: RoomId
    active: bool


class PresenceQuery(Request, tag="presence"):
    """Who is online in a room right now."""

    room: RoomId


class UserPresenceQuery(Request, tag="presence.user"):
    """Whether a user has at least one live connection."""

    user: UserId


class DashboardSubscribe(Request, tag="dashboard.subscribe"):
    """Receive every node's ``dashboard.stats`` each interval (admins and agents)."""


class DashboardUnsubscribe(Request, tag="dashboard.unsubscribe"):
    """Stop receiving ``dashboard.stats``."""


# --- replies -------------------------------------------------------------------------


class Ok(msgspec.Struct, tag="ok", tag_field="type", kw_only=True):
    id: CorrelationId | None = None
    data: Any = None


class Error(msgspec.Struct, tag="error", tag_field="type", kw_only=True, omit_defaults=True):
    id: CorrelationId | None = None
    code: str
    message: str
    field: str | None = None


# --- shared shapes -------------------------------------------------------------------


class UserRef(msgspec.Struct, kw_only=True):
    id: str
    name: str


class RoomInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    kind: Literal["public", "private", "dm"]
    name: str
    topic: str = ""
    last_seq: int = 0
    unread: int = 0
    members: int = 0


# --- server events -------------------------------------------------------------------


class Welcome(Event, tag="welcome"):
    session: str
    user: UserRef
    role: str
    heartbeat_seconds: float
    limits: dict[str, int]
    protocol: int = PROTOCOL_VERSION
    expires_at: float | None = None


class MessageEvent(Event, tag="message"):
    room: str
    seq: int
    ts: float
    sender: UserRef
    text: str
    client_id: str = ""
    edited: bool = False
    deleted: bool = False


class MessageEdited(Event, tag="message.edited"):
    room: str
    seq: int
    text: str
    by: UserRef


class MessageDeleted(Event, tag="message.deleted"):
    room: str
    seq: int
    by: UserRef


class PresenceChanged(Event, tag="presence"):
    room: str
    joined: list[UserRef] = []
    left: list[UserRef] = []


class TypingEvent(Event, tag="typing"):
    room: str
    user: UserRef
    active: bool


class RoomInvited(Event, tag="room.invited"):
    room: RoomInfo
    by: UserRef


class RoomLeft(Event, tag="room.left"):
    """You left this room, on this or another device: no more of its events arrive."""

    room: str


class ResumeReset(Event, tag="resume.reset"):
    """Too many messages were missed to replay: reload history from ``last_seq``."""

    room: str
    last_seq: int
    missed: int


class TokenExpiring(Event, tag="token.expiring"):
    """Send ``auth.refresh`` before ``expires_at`` or the connection closes (4001)."""

    expires_at: float


class UserEvent(Event, tag="user.event"):
    """An event pushed to this user by a backend or bot through the REST API."""

    event: str
    data: Any = None
    sender: UserRef | None = None


PanelFigures = dict[str, float]


class DashboardStats(Event, tag="dashboard.stats"):
    """One node's counters, sent by every node each ``interval`` seconds to dashboards.

    A dashboard adds the figures of the nodes it heard from in the last few intervals.
    ``panels`` holds figures that domains add, by panel name.
    """

    node: str
    ts: float
    interval: float
    connections: int
    rooms: int
    messages_per_second: float
    deliveries_per_second: float
    messages_total: int
    slow_consumer_closes: int
    panels: dict[str, PanelFigures] = {}


SERVER_EVENTS: tuple[type[Event], ...] = (
    Welcome,
    MessageEvent,
    MessageEdited,
    MessageDeleted,
    PresenceChanged,
    TypingEvent,
    RoomInvited,
    RoomLeft,
    ResumeReset,
    TokenExpiring,
    UserEvent,
    DashboardStats,
)
