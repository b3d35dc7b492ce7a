"""One client connection: its lifecycle, its identity and its bounded outbox.

Fan-out never awaits a client. ``push`` first offers already-encoded text to the
transport's synchronous ``try_write`` (the socket takes it now: no task switch, no
queue); when the transport cannot take it (its buffer is full, or it has no fast path)
the text goes to a bounded outbox that one writer task per connection drains, and
everything after it queues behind it so order is kept. A client whose outbox overflows
is a slow consumer: it is closed with 4008 and resumes after reconnecting, while the
room goes on at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from papo.protocol.close_codes import CLOSE_INFO, CloseCode
from papo.protocol.frames import UserRef

log = logging.getLogger("papo.hub")


class State(Enum):
    """``OPEN`` -> ``CLOSING`` -> ``CLOSED``; nothing ever goes back."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED = {
    State.OPEN: {State.CLOSING, State.CLOSED},
    State.CLOSING: {State.CLOSED},
    State.CLOSED: set(),
}


class IllegalTransition(RuntimeError):
    pass


class TransportClosed(Exception):
    """The peer is gone; raised by transports so the hub needs no WebSocket library."""


class Transport(Protocol):
    """What the hub needs from a WebSocket: send text, close with a code.

    ``send_text`` and ``close`` raise ``TransportClosed`` once the peer has gone away.
    ``try_write`` writes at once without waiting and says whether it did; a transport
    without a fast path always answers False.
    """

    def try_write(self, text: str) -> bool: ...

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


def _nothing() -> None:
    pass


@dataclass(slots=True)
class Principal:
    """Who is on the connection; refreshed in place by ``auth.refresh``."""

    user: UserRef
    role: str
    expires_at: float | None


class Connection:
    __slots__ = (
        "_max_outbox",
        "_on_slow",
        "_outbox",
        "_sending",
        "_writer",
        "catching_up",
        "close_code",
        "feeds",
        "id",
        "on_closing",
        "on_reauthenticated",
        "principal",
        "replayed_upto",
        "rooms",
        "state",
        "transport",
        "typing_in",
    )

    def __init__(
        self,
        connection_id: str,
        principal: Principal,
        transport: Transport,
        *,
        max_outbox: int,
        on_slow: Callable[[Connection], None],
    ) -> None:
        self.id = connection_id
        self.principal = principal
        self.transport = transport
        self.state = State.OPEN
        self.rooms: set[str] = set()
        self.typing_in: dict[str, float] = {}
        # Non-room channels followed (the dashboard); a list: few ever follow any.
        self.feeds: list[str] = []
        # room -> live events (seq, text; seq 0 for non-messages) held back while missed
        # messages are replayed
        self.catching_up: dict[str, list[tuple[int, str]]] = {}
        # room -> highest sequence sent by a replay; live copies up to it are dropped
        self.replayed_upto: dict[str, int] = {}
        # Created when a frame first has to wait: most connections never need one.
        self._outbox: deque[str] | None = None
        self._max_outbox = max_outbox
        self._on_slow = on_slow
        # Started only when a frame has to wait (most never need one): an idle
        # connection costs no task.
        self._writer: asyncio.Task[None] | None = None
        self._sending = False  # the writer task holds a frame it has not written yet
        self.close_code: int | None = None
        # Called once when papo starts closing this connection (the transport's owner
        # uses it to stop reading after a grace period).
        self.on_closing: Callable[[], None] = _nothing
        # Called after ``auth.refresh`` replaced the principal (sets the expiry deadline again).
        self.on_reauthenticated: Callable[[], None] = _nothing

    def drop_hooks(self) -> None:
        """Forget the hooks once the connection's socket is gone. They are bound methods of
        the transport's owner and the session, which both hold this connection: left
        set, every closed connection stays a reference cycle (about 30 objects) that
        only a full pass of the cycle collector frees, and each such pass stops the
        loop for every connection still open."""
        self.on_closing = self.on_reauthenticated = _nothing

    @property
    def user_id(self) -> str:
        return self.principal.user.id

    def transition(self, new: State) -> None:
        if new not in _ALLOWED[self.state]:
            raise IllegalTransition(f"connection {self.id}: {self.state.value} -> {new.value}")
        self.state = new

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name=f"papo-writer-{self.id}")

    def push(self, text: str) -> bool:
        """Queue ``text`` without waiting; False (and a slow-consumer close) on overflow."""
        if self.state is not State.OPEN:
            return False
        outbox = self._outbox
        if not outbox and not self._sending and self.transport.try_write(text):
            return True
        if outbox is None:
            outbox = self._outbox = deque()
        if len(outbox) >= self._max_outbox:
            outbox.clear()
            self._on_slow(self)
            self.close_soon(CloseCode.SLOW_CONSUMER)
            return False
        outbox.append(text)
        self._ensure_writer()
        return True

    def close_soon(self, code: CloseCode) -> None:
        """Close after what is already queued; callable from synchronous fan-out."""
        if self.state is not State.OPEN:
            return
        self.transition(State.CLOSING)
        self.close_code = code
        self._ensure_writer()
        self.on_closing()

    async def _write_loop(self) -> None:
        """Drain the outbox in order, send the close frame if closing, then end."""
        try:
            while outbox := self._outbox:
                self._sending = True
                await self.transport.send_text(outbox.popleft())
                self._sending = False
                if not outbox and self._outbox is outbox:
                    self._outbox = None  # caught up: back to writing straight through
            if self.state is State.CLOSING:
                code = CloseCode(self.close_code or CloseCode.NORMAL)
                await self.transport.close(code, CLOSE_INFO[code].reason)
        except (TransportClosed, OSError) as exc:
            # The peer went away mid-send: nothing more can reach it. The reader side
            # notices and cleans up.
            self.state = State.CLOSED
            self._outbox = None
            log.debug("writer stopped", extra={"connection": self.id, "error": str(exc)})

    async def wait_closed(self, seconds: float) -> bool:
        """Give the writer ``seconds`` to flush and send the close frame; True if it did."""
        if self._writer is None:
            return True
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(self._writer)
        except TimeoutError:
            return False
        return True

    async def finish(self) -> None:
        """Stop writing (the connection is gone); idempotent."""
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
