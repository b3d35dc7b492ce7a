"""One connection's frame loop, independent of the WebSocket library.

Decodes each frame through the registry, checks who may send it, runs its handler and
sends exactly one reply. Also enforces the per-connection frame rate and watches the
access token's expiry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine
from typing import Any

import msgspec

from papo.hub.broker import BrokerError
from papo.hub.chat import AfterReply, Deferred, ack
from papo.hub.connection import Connection, State
from papo.hub.history import Stored
from papo.hub.hub import Hub
from papo.protocol import frames as f
from papo.protocol.close_codes import CloseCode
from papo.protocol.errors import ErrorCode, PapoError
from papo.protocol.registry import LATER, FrameSpec, Registry, frame_tag

log = logging.getLogger("papo.hub")

MAX_IN_FLIGHT = 64
FINISH_SECONDS = 5.0  # a closing session's requests in flight get this long to answer
ABUSE_WINDOW = 10.0
ABUSE_LIMIT = 50


class _Envelope(msgspec.Struct):
    """Enough of a bad frame to address the error reply (its id) and count it (its type)."""

    id: Any = None
    type: Any = None


_envelope = msgspec.json.Decoder(_Envelope)
_encoder = msgspec.json.Encoder()


def _salvage(raw: str | bytes) -> _Envelope:
    try:
        envelope = _envelope.decode(raw)
    except msgspec.MsgspecError:
        return _Envelope()
    if not isinstance(envelope.id, str | int) or isinstance(envelope.id, bool):
        envelope.id = None
    return envelope


class Session:
    __slots__ = (
        "_freed",
        "_pending",
        "_refilled",
        "_strikes",
        "_tokens",
        "_warned",
        "_watched",
        "connection",
        "deadline_slot",
        "hub",
        "registry",
    )

    def __init__(self, hub: Hub, registry: Registry[Connection], connection: Connection) -> None:
        self.hub = hub
        self.registry = registry
        self.connection = connection
        limits = hub.limits
        self._tokens = float(limits.frame_burst)
        self._refilled = time.monotonic()
        # Made on first use: an idle connection should cost as little as possible.
        self._strikes: list[float] | None = None
        self._freed: asyncio.Future[None] | None = None  # a reader waits for a send's answer
        self._pending: set[asyncio.Future[Stored]] | None = None
        # The token expiry watched (its warning first, unless too late for one).
        self._watched: float | None = None
        self._warned = False
        self.deadline_slot: int | None = None  # kept by the hub's deadlines

    # --- replies ---------------------------------------------------------------------------

    def _reply(self, request_id: Any, data: Any) -> None:
        self.connection.push(_encoder.encode(f.Ok(id=request_id, data=data)).decode())
        self.hub.metrics.frames_out.labels("ok").inc()

    def _error(self, request_id: Any, error: PapoError) -> None:
        frame = f.Error(
            id=request_id, code=error.code.value, message=error.message, field=error.field
        )
        self.connection.push(_encoder.encode(frame).decode())
        self.hub.metrics.errors.labels(error.code.value).inc()
        self.hub.metrics.frames_out.labels("error").inc()

    def send_event(self, event: f.Event) -> None:
        self.connection.push(_encoder.encode(event).decode())

    # --- limits ----------------------------------------------------------------------------

    def _take_token(self) -> bool:
        limits = self.hub.limits
        now = time.monotonic()
        self._tokens = min(
            float(limits.frame_burst),
            self._tokens + (now - self._refilled) * limits.frames_per_second,
        )
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _strike(self, code: CloseCode) -> None:
        """Count a refused frame; a client that keeps at it is disconnected."""
        now = time.monotonic()
        self._strikes = [t for t in self._strikes or () if now - t < ABUSE_WINDOW]
        self._strikes.append(now)
        if len(self._strikes) >= ABUSE_LIMIT:
            self.hub.metrics.closes.labels(str(int(code))).inc()
            self.connection.close_soon(code)

    # --- the loop --------------------------------------------------------------------------

    def take(self, raw: str | bytes, *, binary: bool = False) -> Coroutine[Any, Any, None] | None:
        """Handle a frame as far as it goes without waiting; what is left (a handler that
        waits for a store) comes back as a coroutine to run before the next frame.

        Checks, refusals and the frames with a ``now`` handler (a member's
        ``message.send``) are answered here, so the WebSocket side hands them over as
        it reads them, with no task per frame.
        """
        if self.connection.state is not State.OPEN:
            return None
        if binary:
            self._error(
                None, PapoError(ErrorCode.BINARY_FRAME, "papo accepts text frames of JSON only")
            )
            self._strike(CloseCode.PROTOCOL_ABUSE)
            return None
        if not self._take_token():
            envelope = _salvage(raw)
            self._error(
                envelope.id,
                PapoError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self.hub.limits.frames_per_second:g} frames per second; slow down",
                    retry_after=1.0,
                ),
            )
            self._strike(CloseCode.RATE_LIMITED)
            return None
        try:
            frame = self.registry.decode(raw)
        except PapoError as error:
            envelope = _salvage(raw)
            self.hub.metrics.frames_in.labels("invalid").inc()
            self._error(envelope.id, error)
            self._strike(CloseCode.PROTOCOL_ABUSE)
            return None
        spec = self.registry.spec(frame_tag(type(frame)))
        self.hub.metrics.frames_in.labels(spec.frame_type).inc()
        if spec.roles is not None and self.connection.principal.role not in spec.roles:
            self._error(
                frame.id,
                PapoError(
                    ErrorCode.FORBIDDEN,
                    f"role {self.connection.principal.role} may not send {spec.frame_type}",
                ),
            )
            return None
        if spec.now is not None and not self._too_many_in_flight():
            try:
                result = spec.now(self.connection, frame)
            except Exception as exc:
                self._failed(spec, frame, exc)
                return None
            if result is not LATER:
                self._answer(frame, result)
                return None
        return self._run(spec, frame)

    async def _run(self, spec: FrameSpec[Connection], frame: f.Request) -> None:
        try:
            result = await spec.handler(self.connection, frame)
        except Exception as exc:
            self._failed(spec, frame, exc)
            return
        if isinstance(result, Deferred):
            while self._too_many_in_flight():  # backpressure: stop reading while they wait
                self._freed = asyncio.get_running_loop().create_future()
                await self._freed
        self._answer(frame, result)

    def _too_many_in_flight(self) -> bool:
        return self._pending is not None and len(self._pending) >= MAX_IN_FLIGHT

    def _answer(self, frame: f.Request, result: Any) -> None:
        if isinstance(result, AfterReply):
            self._reply(frame.id, result.data)
            result.then()
            return
        if isinstance(result, Deferred):
            if self._pending is None:
                self._pending = set()
            # A callback, not a task per send: a busy room has a send of every member
            # waiting for its write, and each task would be an object, a coroutine and
            # an entry in asyncio's task set, kept for as long as the write takes.
            self._pending.add(result.future)
            result.future.add_done_callback(functools.partial(self._answer_send, frame.id))
            return
        self._reply(frame.id, result)

    def _failed(self, spec: FrameSpec[Connection], frame: f.Request, exc: Exception) -> None:
        if isinstance(exc, PapoError):
            self._error(frame.id, exc)
        elif isinstance(exc, BrokerError):
            log.warning("broker unavailable", extra={"type": spec.frame_type, "error": str(exc)})
            self._error(
                frame.id,
                PapoError(
                    ErrorCode.UNAVAILABLE, "papo cannot reach its message bus; retry shortly"
                ),
            )
        else:
            log.error("handler failed", extra={"type": spec.frame_type}, exc_info=exc)
            self._error(
                frame.id, PapoError(ErrorCode.INTERNAL_ERROR, "papo hit an unexpected error")
            )

    def _answer_send(self, request_id: Any, future: asyncio.Future[Stored]) -> None:
        if self._pending is not None:
            self._pending.discard(future)
        if self._freed is not None and not self._freed.done():
            self._freed.set_result(None)
        if future.cancelled():  # the session closed before the write answered
            return
        error = future.exception()
        if error is None:
            self._reply(request_id, ack(future.result()))
            return
        log.warning("send failed", extra={"error": repr(error)})
        self._error(
            request_id,
            PapoError(
                ErrorCode.UNAVAILABLE, "the message was not stored; retry with the same client_id"
            ),
        )

    # --- token expiry ----------------------------------------------------------------------

    def watch_expiry(self) -> None:
        """Set one deadline (an entry on the node's timer, not a timer of its own: idle
        connections stay cheap) for the expiry warning, which then sets the close; a
        later ``auth.refresh`` sets it again."""
        deadlines = self.hub.deadlines
        deadlines.cancel(self)
        expires_at = self._watched = self.connection.principal.expires_at
        if expires_at is None:
            return
        warn_in = expires_at - self.hub.limits.token_warning_seconds - time.time()
        self._warned = warn_in <= 0  # too late to warn: only the close is left
        deadlines.set_in(self, warn_in if warn_in > 0 else expires_at - time.time())

    def deadline_due(self) -> None:
        expires_at = self._watched
        if expires_at is None:
            return
        if not self._warned:
            self._warned = True
            self.send_event(f.TokenExpiring(expires_at=expires_at))
            self.hub.deadlines.set_in(self, expires_at - time.time())
        elif self.connection.principal.expires_at == expires_at:
            self._watched = None
            self.hub.metrics.closes.labels(str(int(CloseCode.TOKEN_EXPIRED))).inc()
            self.connection.close_soon(CloseCode.TOKEN_EXPIRED)

    async def close(self) -> None:
        self._watched = None
        self.hub.deadlines.cancel(self)
        if self._pending:
            # Sends in flight get a while to be acknowledged; past it their writes go on,
            # and only this session stops waiting for them.
            await asyncio.wait(set(self._pending), timeout=FINISH_SECONDS)
