"""Frames out: each event framed once, and everything for one socket in one write.

A server-to-client text frame (unmasked, uncompressed: papo offers no compression) is
the same bytes for every recipient, so papo frames an event once and writes those
bytes to each recipient's socket, as ``websockets.broadcast`` does.

Frames accepted during one turn of the event loop are held and written together at its
end (``WriteBatcher``): when a batch of stored messages is published at once, each
recipient gets all of them in one ``writev`` instead of one ``send`` per message. The
send syscall per frame is where fan-out spends most of its time, and holding frames
until the turn ends delays nothing (the loop would not write them sooner).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Protocol

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


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatcher:
    """Transports with frames held this loop turn, flushed together when it ends."""

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def hold(self, transport: Flushable) -> None:
        self._dirty.append(transport)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty, self._scheduled = self._dirty, [], False
        for transport in dirty:
            transport.flush()
