"""An async Python client for papo's WebSocket protocol, for bots, tests and tools.

    async with await PapoClient.connect("ws://127.0.0.1:8000/ws", token=token) as papo:
        room = await papo.request("room.create", name="ops")
        await papo.request("room.join", room=room["id"])
        ack = await papo.send_message(room["id"], "deploy finished")
        async for event in papo.events():
            ...

It reconnects by itself (with backoff) when the connection drops or the server restarts,
resumes every joined room from the last sequence it saw, and hands each room's messages
to ``events()`` exactly once and in order. ``send_message`` keeps its ``client_id``
across reconnects, so a send retried after a drop is stored once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from papo.protocol.close_codes import CloseCode

log = logging.getLogger("papo.client")

TokenProvider = Callable[[], Awaitable[str]]
_NO_RECONNECT = {CloseCode.NORMAL, CloseCode.AUTH_FAILED}


class PapoClientError(Exception):
    """The server answered a request with an error."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field


class ConnectionLost(Exception):
    """The connection dropped before the reply arrived; the request may or may not have run."""


class PapoClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        token_provider: TokenProvider | None = None,
        reconnect: bool = True,
        max_backoff: float = 5.0,
        alternates: Sequence[str] = (),
    ) -> None:
        self.url = url
        # Reconnects try the next address in turn (several nodes without a load balancer).
        self._urls = [url, *alternates]
        self._url_index = 0
        self._token = token
        self._token_provider = token_provider
        self.reconnect = reconnect
        self._max_backoff = max_backoff
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.last_seq: dict[str, int] = {}  # room -> highest sequence handed to events()
        self.joined: set[str] = set()
        self.welcome: dict[str, Any] = {}
        self.close_codes: list[int] = []
        self.reconnects = 0
        self.duplicates_dropped = 0  # messages the server sent twice (should stay 0)
        self._reconnected = asyncio.Event()

    @classmethod
    async def connect(cls, url: str, token: str | None = None, **options: Any) -> PapoClient:
        client = cls(url, token, **options)
        await client._open()
        client._reader = asyncio.create_task(client._run())
        return client

    async def __aenter__(self) -> PapoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def current_url(self) -> str:
        return self._urls[self._url_index]

    @property
    def user_id(self) -> str:
        return str(self.welcome["user"]["id"])

    async def _token_now(self) -> str:
        if self._token_provider is not None:
            self._token = await self._token_provider()
        if not self._token:
            raise PapoClientError("token_missing", "no token to connect with")
        return self._token

    async def _open(self) -> None:
        token = await self._token_now()
        self._ws = await connect(
            self._urls[self._url_index],
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=2**24,
            open_timeout=10,
        )
        welcome = msgspec.json.decode(await self._ws.recv())
        if welcome.get("type") != "welcome":
            await self._ws.close()
            raise PapoClientError(welcome.get("code", "unexpected"), welcome.get("message", ""))
        self.welcome = welcome
        self._connected.set()

    async def _run(self) -> None:
        while True:
            ws = self._ws
            assert ws is not None
            try:
                async for raw in ws:
                    self._dispatch(msgspec.json.decode(raw))
            except ConnectionClosed:
                pass
            self._connected.clear()
            code = ws.close_code or CloseCode.GOING_AWAY
            self.close_codes.append(code)
            self._fail_pending()
            if self._closing or not self.reconnect or code in _NO_RECONNECT:
                self._events.put_nowait({"type": "closed", "code": code})
                return
            await self._reconnect()

    async def _reconnect(self) -> None:
        for attempt in itertools.count():
            delay = min(self._max_backoff, 0.05 * 2**attempt) * (0.5 + random.random())  # noqa: S311
            await asyncio.sleep(delay)
            self._url_index = (self._url_index + 1) % len(self._urls)
            try:
                await self._open()
            except (OSError, InvalidStatus, ConnectionClosed, TimeoutError) as exc:
                log.debug("reconnect failed", extra={"error": repr(exc)})
                continue
            self.reconnects += 1
            self._reconnected.set()
            if self.joined:
                resume_id = next(self._ids)
                frame = {
                    "type": "resume",
                    "id": resume_id,
                    "rooms": {room: self.last_seq.get(room, 0) for room in self.joined},
                }
                future = asyncio.get_running_loop().create_future()
                self._pending[resume_id] = future
                assert self._ws is not None
                await self._ws.send(msgspec.json.encode(frame).decode())
            return

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost("the connection dropped"))
        self._pending.clear()

    def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("ok", "error"):
            future = self._pending.pop(frame.get("id"), None)  # type: ignore[arg-type]
            if future is None or future.done():
                return
            if kind == "ok":
                future.set_result(frame.get("data"))
            else:
                future.set_exception(
                    PapoClientError(frame["code"], frame["message"], frame.get("field"))
                )
            return
        if kind == "message":
            room, seq = frame["room"], frame["seq"]
            if seq <= self.last_seq.get(room, 0):
                self.duplicates_dropped += 1
                return  # already handed out: never hand a message out twice
            self.last_seq[room] = seq
        elif kind == "resume.reset":
            self.last_seq[frame["room"]] = frame["last_seq"]
        self._events.put_nowait(frame)

    # --- public API ------------------------------------------------------------------------

    async def request(self, frame_type: str, **fields: Any) -> Any:
        """Send one frame and wait for its reply's data; errors raise ``PapoClientError``."""
        async with asyncio.timeout(30):
            await self._connected.wait()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        assert self._ws is not None
        try:
            await self._ws.send(
                msgspec.json.encode({"type": frame_type, "id": request_id, **fields}).decode()
            )
        except ConnectionClosed:
            self._pending.pop(request_id, None)
            raise ConnectionLost("the connection dropped") from None
        data = await future
        if frame_type == "room.join":
            room = data["room"]["id"]
            self.joined.add(room)
            for message in data.get("history", []):
                self.last_seq[room] = max(self.last_seq.get(room, 0), message["seq"])
        elif frame_type == "room.leave":
            self.joined.discard(fields["room"])
        return data

    async def send_message(
        self, room: str, text: str, client_id: str | None = None
    ) -> dict[str, Any]:
        """Send until acknowledged, keeping one ``client_id`` so retries are stored once."""
        client_id = client_id or uuid.uuid4().hex
        while True:
            try:
                ack: dict[str, Any] = await self.request(
                    "message.send", room=room, text=text, client_id=client_id
                )
                return ack
            except ConnectionLost:
                if not self.reconnect or self._closing:
                    raise
            except PapoClientError as error:
                if error.code != "unavailable":
                    raise
                await asyncio.sleep(0.1)

    async def wait_reconnected(self, seconds: float) -> None:
        """Wait until the client has reconnected (at least once) after a drop."""
        async with asyncio.timeout(seconds):
            await self._reconnected.wait()

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            return await self._events.get()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self._events.get()
            yield event
            if event["type"] == "closed":
                return

    def pending_events(self) -> list[dict[str, Any]]:
        drained = []
        while not self._events.empty():
            drained.append(self._events.get_nowait())
        return drained

    async def drop(self) -> None:
        """Close the transport abruptly (tests: simulate a network failure)."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            done, _ = await asyncio.wait({self._reader}, timeout=5)
            if not done:
                self._reader.cancel()
            elif not self._reader.cancelled():
                self._reader.exception()  # a dropped connection ends the reader; not news
