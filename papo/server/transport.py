"""Writing to one client's WebSocket, with a fast path for fan-out.

Under plain ASGI every frame is a trip through Starlette and uvicorn that encodes and
frames the text again for each recipient and wakes a task per connection. When uvicorn
runs its ``websockets-sansio`` protocol (papo's configuration, without compression),
a server-to-client text frame is the same bytes for every recipient, so papo frames an
event once and writes those bytes straight to each connection's asyncio transport, as
``websockets.broadcast`` does. Whenever that is not safe (the socket's buffer is over
its high-water mark, a close has started, another server runs papo) ``try_write``
answers False and the frame takes the ordinary ASGI path in order.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.protocol import State as ProtocolState

from papo.hub.connection import TransportClosed
from papo.server.middleware import SERVER_SEND

TEXT_FRAME = 0x81  # FIN + opcode 1 (text); server frames are never masked

_last_text: str | None = None
_last_frame = b""


def text_frame(text: str) -> bytes:
    """The unmasked, uncompressed frame for ``text``, built once per fan-out.

    A fan-out hands the same string object to every recipient, so remembering the last
    one frames each event once however many connections get it.
    """
    global _last_text, _last_frame
    if text is _last_text:
        return _last_frame
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", TEXT_FRAME, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", TEXT_FRAME, 126, size)
    else:
        header = struct.pack("!BBQ", TEXT_FRAME, 127, size)
    _last_text, _last_frame = text, header + payload
    return _last_frame


def sansio_protocol(websocket: WebSocket) -> Any | None:
    """uvicorn's protocol object behind this WebSocket, if it is one papo can write to."""
    server_send = websocket.scope.get(SERVER_SEND)
    protocol = getattr(server_send, "__self__", None)
    needed = ("transport", "conn", "writable", "close_sent", "disconnected")
    if protocol is None or not all(hasattr(protocol, name) for name in needed):
        return None
    extensions = getattr(protocol.conn, "extensions", None)
    return None if extensions else protocol  # compression would need per-socket frames


class StarletteTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        # The ASGI send callable itself: skips Starlette's per-message state checks.
        self._send = websocket._send
        self._protocol = sansio_protocol(websocket)

    def try_write(self, text: str) -> bool:
        protocol = self._protocol
        if (
            protocol is None
            or protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not ProtocolState.OPEN
            or protocol.transport.is_closing()
        ):
            return False
        protocol.transport.write(text_frame(text))
        return True

    async def send_text(self, text: str) -> None:
        try:
            await self._send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError) as exc:  # uvicorn's ClientDisconnected is an OSError
            raise TransportClosed from exc

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._websocket.close(code, reason)
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise TransportClosed from exc
