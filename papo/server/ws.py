"""``/ws``: papo's own WebSocket protocol object, one per connection, under uvicorn.

uvicorn parses the HTTP request and hands every upgrade to this class (papo passes it
as uvicorn's ``ws`` protocol). It runs the handshake with ``websockets``' sans-I/O
parser, authenticates, and then feeds frames straight to the connection's ``Session``.

Why not an ASGI endpoint: under ASGI each idle connection kept uvicorn's protocol with
its receive queue and events, the request scope and headers, Starlette's ``WebSocket``
and a task whose suspended coroutines ran through uvicorn, Starlette's middleware,
router and exception wrappers: about 35 KiB per connection, more than twice what
``websockets`` itself needs. Here an idle connection is this object, the parser, and
papo's ``Connection`` and ``Session``; no task runs while it is idle.

Frames are handled one at a time, in order, as they are read (``Session.take``): a
member's ``message.send`` is numbered and fanned out before ``data_received`` returns,
inside a write batch, so what one read brings reaches each socket in one write. Only
a frame that waits for a store gets a task, and frames read meanwhile queue behind it.

This object is also the hub's transport for the connection: fan-out frames are framed
once and written to the socket at once, or when a batch of them ends
(``WriteBatcher``); when the socket's buffer is full they wait in the connection's
outbox and ``send_text`` writes them as the buffer drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import msgspec
from starlette.applications import Starlette
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State as WireState
from websockets.server import ServerProtocol

from papo.hub.connection import Connection, TransportClosed
from papo.hub.session import Session
from papo.protocol import frames as f
from papo.protocol.close_codes import CLOSE_INFO, CloseCode
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.auth import token_from_first_frame, token_from_handshake
from papo.server.logs import context_id
from papo.server.middleware import new_id
from papo.server.realtime import principal_of
from papo.server.state import AppState
from papo.server.transport import WriteBatcher, text_frame

log = logging.getLogger("papo.ws")
# websockets logs every open and refusal at INFO; papo logs its own "connected" lines.
_wire_log = logging.getLogger("papo.ws.wire")
_wire_log.setLevel(logging.WARNING)
_encoder = msgspec.json.Encoder()

WS_PATH = "/ws"
CLOSE_GRACE_SECONDS = 5.0  # for the peer to answer our close frame, or a stuck writer
INBOX_FRAMES = 32  # frames read ahead of the handler before the socket is paused


class _Due(enum.Enum):
    """What a connection's one deadline is for."""

    PING = "send the next keepalive ping"
    PONG = "the ping's answer is late: the peer is gone"
    ABORT = "our close frame got no answer: drop the socket"


def websocket_protocol(app: Starlette) -> Callable[..., WebSocketProtocol]:
    """uvicorn's ``ws`` protocol factory for ``app``: every upgrade becomes ours."""

    def make(config: Any, server_state: Any, app_state: Any, _loop: Any = None) -> Any:
        return WebSocketProtocol(app, server_state.connections)

    return make


def _release_http_protocol(http: asyncio.BaseProtocol) -> None:
    """Break the reference cycle of the HTTP protocol that handed this socket over.

    uvicorn's httptools protocol and its parser point at each other, and uvicorn only
    breaks that in ``connection_lost``, which after an upgrade goes to papo instead.
    Left alone, every connection leaves about 30 objects for the cycle collector; 1000
    clients connecting fill a full collection that stopped the loop for 40-60 ms in the
    middle of S4 (docs/benchmarks-log.md). Dropped here, after the hand-over (the parser has
    nothing left to do: it raised the upgrade), they are freed by reference counting.
    """
    if http is not None and getattr(http, "parser", None) is not None:
        asyncio.get_running_loop().call_soon(setattr, http, "parser", None)


class WebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_app",
        "_batcher",
        "_closing",
        "_drained",
        "_due",
        "_first_frame",
        "_fragments",
        "_held",
        "_inbox",
        "_paused",
        "_ping_payload",
        "_read_paused",
        "_registry",
        "_task",
        "_transport",
        "_watchdog",
        "connection",
        "deadline_slot",
        "id",
        "lost",
        "session",
        "state",
        "wire",
    )

    def __init__(self, app: Starlette, registry: set[Any]) -> None:
        self._app = app
        self._registry = registry  # uvicorn's open connections: it shuts them down
        # The frame size limit comes from papo's settings, set once the handshake is in.
        self.wire = ServerProtocol(max_size=None, logger=_wire_log)
        self.id = new_id("conn")
        self.state: AppState | None = None
        self.connection: Connection | None = None
        self.session: Session | None = None
        self.lost = False
        self._transport: asyncio.Transport | None = None
        self._closing = False  # our close frame is out (or we gave up on the peer)
        self._paused = False  # the socket's buffer is over its high-water mark
        self._drained: asyncio.Future[None] | None = None
        self._held: list[bytes] | None = None  # frames accepted during a batch
        self._batcher: WriteBatcher | None = None
        self._inbox: deque[str | bytes] | None = None
        self._read_paused = False
        self._fragments: list[bytes] | None = None
        self._first_frame: asyncio.Future[str | bytes] | None = None
        self._task: asyncio.Task[None] | None = None  # auth, then frame handling, then cleanup
        # What this connection's deadline on the hub's timer is for, when it has one.
        self._due = _Due.PING
        self.deadline_slot: int | None = None
        self._ping_payload: bytes | None = None
        self._watchdog: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._registry.add(self)
        _release_http_protocol(transport.get_protocol())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._registry.discard(self)
        self._cancel_deadline()
        self._held = None
        if self._inbox:
            self._inbox.clear()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._first_frame is not None and not self._first_frame.done():
            self._first_frame.cancel()
        if self._task is None:
            self._start_cleanup()
        # else: the frame being handled finishes first (as it would have on a live
        # socket); the task's end starts the cleanup, so a handler never subscribes a
        # connection that is already detached.

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def eof_received(self) -> bool | None:
        self.wire.receive_eof()
        self._write_output()
        return None

    def data_received(self, data: bytes) -> None:
        wire = self.wire
        wire.receive_data(data)
        events = wire.events_received()
        # Frames handled as they are read (a member's sends) fan out as they are handled.
        # When one read brings several, their writes are held until the last is handled,
        # so each socket gets them in one write; a lone frame's are not held, or its
        # first recipient would wait until the last one's frame had been queued.
        batcher = self._batcher if len(events) > 1 else None
        if batcher is not None:
            batcher.begin()
        try:
            for event in events:
                if isinstance(event, Frame):
                    self._frame(event)
                elif isinstance(event, Request):
                    self._handshake(event)
        finally:
            if batcher is not None:
                batcher.end()
        self._write_output()
        if wire.parser_exc is not None:  # too big, bad framing: the wire sent its close
            self._closing = True

    def shutdown(self) -> None:
        """uvicorn is stopping: flush what is queued, then close with 1012."""
        if self.connection is not None and self.state is not None:
            self.state.realtime.hub.send_elsewhere(self.connection)
            return
        if self.wire.state is WireState.CONNECTING:
            self._reject(503, "papo is restarting; reconnect to another node")
        elif not self._closing:
            self._send_close(CloseCode.SERVICE_RESTART)

    # --- handshake -----------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        state: AppState | None = getattr(self._app.state, "papo", None)
        url = urlsplit(request.path)
        if url.path != WS_PATH:
            self._reject(404, f"no WebSocket endpoint at {url.path}; papo's is {WS_PATH}")
            return
        if state is None or not state.realtime.hub.accepting:
            self._reject(503, "papo is restarting; reconnect to another node")
            return
        response = self.wire.accept(request)
        self.wire.send_response(response)  # a refusal also ends the stream
        if response.status_code != 101:
            return
        self.state = state
        self.wire.max_size = state.settings.realtime.max_frame_bytes
        self._batcher = state.realtime.batcher
        # One Authorization value, however many were sent (several never authenticate).
        headers = {"authorization": ", ".join(request.headers.get_all("Authorization"))}
        token = token_from_handshake(headers, dict(parse_qsl(url.query)))
        # websockets' parser keeps the request alive for the whole connection: let go of
        # its headers and path (with any token in it), about 2 KiB per connection.
        request.headers.clear()
        request.path = ""
        self._start(self._open(token))

    def _reject(self, status: int, text: str) -> None:
        self.wire.send_response(self.wire.reject(status, text))  # and the end of stream
        self._write_output()

    async def _open(self, token: str | None) -> None:
        """Authenticate (handshake token or first frame), attach, welcome."""
        assert self.state is not None
        state = self.state
        hub = state.realtime.hub
        context_id.set(self.id)
        auth_frame_id: Any = None
        try:
            if token is None:
                token, auth_frame_id = await self._first_frame_token(hub.limits.auth_timeout)
            identity = await state.accounts.authenticate(token)
        except asyncio.CancelledError:
            return  # the peer left while papo waited for its auth frame
        except PapoError as error:
            timed_out = error.code is ErrorCode.TOKEN_MISSING and "in time" in error.message
            code = CloseCode.AUTH_TIMEOUT if timed_out else CloseCode.AUTH_FAILED
            hub.metrics.closes.labels(str(int(code))).inc()
            frame = f.Error(
                id=auth_frame_id, code=error.code.value, message=error.message, field=error.field
            )
            self._write_frame(_encoder.encode(frame).decode())
            self._send_close(code)
            return
        if self.lost:
            return
        principal = principal_of(identity)
        remember = getattr(state.realtime.directory, "remember", None)
        if remember is not None:
            remember(principal.user)
        connection = await hub.attach(self.id, principal, self)
        self.connection = connection
        session = self.session = Session(hub, state.realtime.registry, connection)
        connection.on_reauthenticated = session.watch_expiry
        connection.on_closing = self._on_closing
        limits = hub.limits
        session.send_event(
            f.Welcome(
                session=connection.id,
                user=principal.user,
                role=principal.role,
                heartbeat_seconds=limits.heartbeat_seconds,
                expires_at=principal.expires_at,
                limits={
                    "max_message_length": limits.max_message_length,
                    "max_rooms_per_connection": limits.max_rooms_per_connection,
                    "resume_limit": limits.resume_limit,
                    "frames_per_second": int(limits.frames_per_second),
                },
            )
        )
        if auth_frame_id is not None:
            connection.push(
                _encoder.encode(f.Ok(id=auth_frame_id, data={"session": connection.id})).decode()
            )
        session.watch_expiry()
        self._schedule_ping()
        log.info("connected", extra={"user": connection.user_id, "role": principal.role})

    async def _first_frame_token(self, seconds: float) -> tuple[str, Any]:
        """Wait for ``{"type": "auth", "token": ...}``; returns the token and the frame id."""
        if self._inbox:
            raw = self._inbox.popleft()
        else:
            self._first_frame = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(seconds):
                    raw = await self._first_frame
            except TimeoutError:
                raise PapoError(ErrorCode.TOKEN_MISSING, "no auth frame in time") from None
            finally:
                self._first_frame = None
        try:
            frame = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise PapoError(ErrorCode.INVALID_JSON, "the auth frame is not valid JSON") from None
        if not isinstance(frame, dict):
            raise PapoError(ErrorCode.TOKEN_MISSING, 'send {"type": "auth", "token": "<token>"}')
        return token_from_first_frame(frame), frame.get("id")

    # --- frames in -----------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._data(frame)
        elif opcode is Opcode.PONG:
            if self._ping_payload is not None and bytes(frame.data) == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        elif opcode is Opcode.CLOSE and self._closing and self._transport is not None:
            self._transport.close()  # the peer answered our close: the handshake is done
        # PING is answered by the wire itself; a peer's CLOSE is echoed by it with EOF.

    def _data(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CONT:
            if self._fragments is None:
                return
            self._fragments.append(bytes(frame.data))
        else:
            self._fragments = [b"T" if frame.opcode is Opcode.TEXT else b"B", bytes(frame.data)]
        if not frame.fin:
            return
        kind, *parts = self._fragments
        self._fragments = None
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._closing:
            return  # past our close: reads continue only to see the peer's answer
        message: str | bytes = payload
        if kind == b"T":
            try:
                message = payload.decode()
            except UnicodeDecodeError:
                self.wire.fail(1007, "invalid UTF-8 in a text frame")
                self._closing = True
                return
        if self._first_frame is not None and not self._first_frame.done():
            self._first_frame.set_result(message)
            return
        inbox = self._inbox
        session = self.session
        if self._task is None and not inbox and session is not None:
            # Nothing before it still being handled: handle it now, and only what has to
            # wait for a store goes to a task. (uvloop runs every connection's callbacks
            # in one context: the id is this frame's only.)
            token = context_id.set(self.id)
            try:
                rest = session.take(message, binary=isinstance(message, bytes))
                if rest is not None:
                    self._start(rest)
            except Exception:  # as a failed frame task would: logged, and the client told
                log.exception("frame handling failed")
                self._send_close(1011, "internal error")
            finally:
                context_id.reset(token)
            return
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(message)
        if len(inbox) >= INBOX_FRAMES and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()
        if self._task is None and self.session is not None:
            self._start(self._handle_inbox())

    async def _handle_inbox(self) -> None:
        """Hand queued frames to the session one at a time, in the order they came.

        Several frames handled without waiting are handled in one batch of writes, as
        if they had come in one read; a frame that waits ends the batch first.
        """
        session, inbox, batcher = self.session, self._inbox, self._batcher
        assert session is not None
        assert inbox is not None
        assert batcher is not None
        context_id.set(self.id)
        while inbox and not self.lost:
            rest = None
            with batcher.batch() if len(inbox) > 1 else contextlib.nullcontext():
                while rest is None and inbox and not self.lost:
                    message = inbox.popleft()
                    rest = session.take(message, binary=isinstance(message, bytes))
            if rest is not None:
                await rest
            if self._read_paused and len(inbox) < INBOX_FRAMES // 2 and self._transport:
                self._read_paused = False
                self._transport.resume_reading()
        if not inbox:
            self._inbox = None  # an idle connection keeps no queue

    # --- tasks and cleanup ---------------------------------------------------------------

    def _start(self, coroutine: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(coroutine)
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("connection task failed", exc_info=task.exception())
            if not self.lost:
                self._send_close(1011, "internal error")
        if self.lost:
            self._start_cleanup()
        elif self._inbox and self.session is not None and not self._closing:
            self._start(self._handle_inbox())

    def _start_cleanup(self) -> None:
        if self.connection is not None:  # never attached: nothing to clean
            self._task = asyncio.get_running_loop().create_task(self._cleanup())

    async def _cleanup(self) -> None:
        connection, session = self.connection, self.session
        assert connection is not None
        assert self.state is not None
        self.connection = None
        connection.drop_hooks()  # the socket is gone: nothing for them to do
        context_id.set(self.id)
        try:
            if session is not None:
                await session.close()
        finally:
            await self.state.realtime.hub.detach(connection)
            self.session = None
            log.info("disconnected", extra={"code": connection.close_code})

    def _on_closing(self) -> None:
        """papo closes this connection: stop reading, give the writer a grace period."""
        if self._inbox:
            self._inbox.clear()
        connection = self.connection
        if connection is not None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._close_watchdog(connection)
            )

    async def _close_watchdog(self, connection: Connection) -> None:
        flushed = await connection.wait_closed(CLOSE_GRACE_SECONDS)
        if not flushed and self._transport is not None and not self.lost:
            self._transport.abort()  # the peer stopped reading: drop it

    # --- frames out: the hub's transport -------------------------------------------------

    def try_write(self, text: str) -> bool:
        held = self._held
        if held is not None:
            # Already holding frames in this batch: everything after them joins, in order.
            held.append(text_frame(text))
            return True
        transport, batcher = self._transport, self._batcher
        if self._paused or self._closing or self.lost or transport is None or batcher is None:
            return False
        if transport.is_closing():
            return False
        if batcher.holding:
            self._held = [text_frame(text)]
            batcher.hold(self)
        else:
            transport.write(text_frame(text))
        return True

    def flush(self) -> None:
        """Write the frames held in this batch in one call (one ``writev`` for several)."""
        held, self._held = self._held, None
        transport = self._transport
        if not held or transport is None or transport.is_closing():
            return
        if len(held) == 1:
            transport.write(held[0])
        else:
            transport.writelines(held)

    async def send_text(self, text: str) -> None:
        while self._paused and not self.lost:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            self._drained = None
        if self.lost or self._closing:
            raise TransportClosed
        self.flush()
        self._write_frame(text)

    async def close(self, code: int, reason: str) -> None:
        if self.lost:
            raise TransportClosed
        self.flush()
        self._send_close(code, reason)

    def _write_frame(self, text: str) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(text_frame(text))

    def _send_close(self, code: int, reason: str | None = None) -> None:
        if self._closing or self.wire.state is not WireState.OPEN:
            return
        self._closing = True
        if reason is None:
            reason = CLOSE_INFO[CloseCode(code)].reason if code in CloseCode else ""
        self.wire.send_close(code, reason)
        self._write_output()
        # The peer has this long to answer before the socket is dropped.
        self._set_deadline(_Due.ABORT, CLOSE_GRACE_SECONDS)

    def _write_output(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self.wire.data_to_send():
            if data:
                if not transport.is_closing():
                    transport.write(data)
            else:  # end of stream: the wire is done with this connection
                transport.close()

    # --- keepalive -----------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        assert self.state is not None
        interval = self.state.realtime.hub.limits.heartbeat_seconds
        if interval > 0 and not self._closing and not self.lost:
            self._set_deadline(_Due.PING, interval)

    def deadline_due(self) -> None:
        if self._due is _Due.ABORT:
            if self._transport is not None:
                self._transport.abort()
        elif self._closing or self.lost:
            return
        elif self._due is _Due.PING:
            self._ping()
        else:
            self._pong_missed()

    def _ping(self) -> None:
        assert self.state is not None
        self._ping_payload = struct.pack("!I", random.getrandbits(32))
        self.wire.send_ping(self._ping_payload)
        self._write_output()
        self._set_deadline(_Due.PONG, self.state.realtime.hub.limits.heartbeat_seconds)

    def _pong_missed(self) -> None:
        self.wire.fail(1011, "keepalive ping timeout")
        self._closing = True
        self._write_output()
        if self._transport is not None:
            self._transport.close()

    def _set_deadline(self, due: _Due, seconds: float) -> None:
        assert self.state is not None
        self._due = due
        self.state.realtime.hub.deadlines.set_in(self, seconds)

    def _cancel_deadline(self) -> None:
        if self.deadline_slot is not None and self.state is not None:
            self.state.realtime.hub.deadlines.cancel(self)
