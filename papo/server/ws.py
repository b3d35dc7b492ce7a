"""The ``/ws`` endpoint: handshake auth, the welcome, then the frame loop until close."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from papo.hub.connection import Connection
from papo.hub.session import Session
from papo.protocol import frames as f
from papo.protocol.close_codes import CLOSE_INFO, CloseCode
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.auth import token_from_first_frame, token_from_handshake
from papo.server.logs import context_id
from papo.server.middleware import new_id
from papo.server.realtime import principal_of
from papo.server.state import AppState, app_state
from papo.server.transport import StarletteTransport

log = logging.getLogger("papo.ws")
_encoder = msgspec.json.Encoder()
CLOSE_GRACE_SECONDS = 5.0


async def _refuse(websocket: WebSocket, code: CloseCode, error: PapoError, request_id: Any) -> None:
    frame = f.Error(id=request_id, code=error.code.value, message=error.message, field=error.field)
    try:
        await websocket.send_text(_encoder.encode(frame).decode())
        await websocket.close(code, CLOSE_INFO[code].reason)
    except (RuntimeError, WebSocketDisconnect, OSError):
        pass


async def _first_frame_token(websocket: WebSocket, seconds: float) -> tuple[str, Any]:
    """Wait for ``{"type": "auth", "token": ...}``; returns the token and the frame id."""
    try:
        message = await asyncio.wait_for(websocket.receive(), seconds)
    except TimeoutError:
        raise PapoError(ErrorCode.TOKEN_MISSING, "no auth frame in time") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        frame = msgspec.json.decode(message.get("text") or message.get("bytes") or b"")
    except msgspec.DecodeError:
        raise PapoError(ErrorCode.INVALID_JSON, "the auth frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise PapoError(ErrorCode.TOKEN_MISSING, 'send {"type": "auth", "token": "<token>"}')
    return token_from_first_frame(frame), frame.get("id")


async def websocket_endpoint(websocket: WebSocket) -> None:
    state: AppState = app_state(websocket)
    hub = state.realtime.hub
    if not hub.accepting:
        await websocket.close(
            CloseCode.SERVICE_RESTART, CLOSE_INFO[CloseCode.SERVICE_RESTART].reason
        )
        return
    await websocket.accept()
    connection_id = new_id("conn")
    context_id.set(connection_id)
    auth_frame_id: Any = None
    try:
        token = token_from_handshake(websocket.headers, websocket.query_params)
        if token is None:
            token, auth_frame_id = await _first_frame_token(websocket, hub.limits.auth_timeout)
        identity = await state.accounts.authenticate(token)
    except WebSocketDisconnect:
        return
    except PapoError as error:
        timed_out = error.code is ErrorCode.TOKEN_MISSING and "in time" in error.message
        code = CloseCode.AUTH_TIMEOUT if timed_out else CloseCode.AUTH_FAILED
        hub.metrics.closes.labels(str(int(code))).inc()
        await _refuse(websocket, code, error, auth_frame_id)
        return
    principal = principal_of(identity)
    remember = getattr(state.realtime.directory, "remember", None)
    if remember is not None:
        remember(principal.user)
    connection = await hub.attach(connection_id, principal, StarletteTransport(websocket))
    session = Session(hub, state.realtime.registry, connection)
    connection.on_reauthenticated = session.watch_expiry
    try:
        await _serve(websocket, connection, session, auth_frame_id)
    finally:
        await session.close()
        await hub.detach(connection)


async def _serve(
    websocket: WebSocket, connection: Connection, session: Session, auth_frame_id: Any
) -> None:
    hub = session.hub
    limits = hub.limits
    session.send_event(
        f.Welcome(
            session=connection.id,
            user=connection.principal.user,
            role=connection.principal.role,
            heartbeat_seconds=limits.heartbeat_seconds,
            expires_at=connection.principal.expires_at,
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
    log.info("connected", extra={"user": connection.user_id, "role": connection.principal.role})
    # The read loop runs in this task: no extra task per connection. When papo closes
    # the connection itself (slow consumer, expiry, drain, abuse) a watchdog gives the
    # writer a moment to deliver the close frame, then stops the read loop even if the
    # peer never sends or reads again.
    endpoint = asyncio.current_task()
    assert endpoint is not None
    watchdog: list[asyncio.Task[None]] = []

    def on_closing() -> None:
        watchdog.append(asyncio.create_task(_release(connection, endpoint)))

    connection.on_closing = on_closing
    try:
        await _read(websocket, session)
    except asyncio.CancelledError:
        if not watchdog:
            raise
        endpoint.uncancel()
    finally:
        for task in watchdog:
            task.cancel()


async def _release(connection: Connection, endpoint: asyncio.Task[Any]) -> None:
    await connection.wait_closed(CLOSE_GRACE_SECONDS)
    endpoint.cancel()


async def _read(websocket: WebSocket, session: Session) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            log.info("disconnected", extra={"code": message.get("code")})
            return
        text = message.get("text")
        if text is not None:
            await session.handle(text)
        else:
            await session.handle(message.get("bytes") or b"", binary=True)
