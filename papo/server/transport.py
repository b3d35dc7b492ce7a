"""Frames out: each event framed once, and a batch for one socket in one write.

A server-to-client text frame (unmasked, uncompressed: papo offers no compression) is
the same bytes for every recipient, so papo frames an event once and writes those
bytes to each recipient's socket, as ``websockets.broadcast`` does.

A single event is written to each socket at once, so the first recipient does not wait
for the others to be queued. A batch (several stored messages published together, what
a shared broker brought in during one loop turn, or the sends one read of a client
brought in) is held (``WriteBatcher``) and
each recipient gets all of it in one ``writev`` when the batch ends, instead of one
``send`` per message: the send syscall per frame is where fan-out spends most of its
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterator
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
    """Holds frames while a batch is fanned out, then writes each socket's at once.

    Batches nest; frames are written when the outermost one ends. Nothing may await
    inside a batch: every socket's writes wait for its end.
    """

    __slots__ = ("_depth", "_dirty", "_turn_held")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._depth = 0
        self._turn_held = False

    @property
    def holding(self) -> bool:
        return self._depth > 0

    def hold(self, transport: Flushable) -> None:
        """``transport`` has frames to write when the batch ends."""
        self._dirty.append(transport)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()

    def begin(self) -> None:
        """Start a batch (``batch()`` without a context manager, for the read path)."""
        self._depth += 1

    def until_turn_ends(self) -> None:
        """Hold everything written until this loop turn ends (for input that arrives
        as many small deliveries in one turn, such as a shared broker's)."""
        if not self._turn_held:
            self._turn_held = True
            self._depth += 1
            asyncio.get_running_loop().call_soon(self._turn_ended)

    def _turn_ended(self) -> None:
        self._turn_held = False
        self.end()

    def end(self) -> None:
        """End a batch; the outermost end writes what it held."""
        self._depth -= 1
        if self._depth:
            return
        dirty, self._dirty = self._dirty, []
        for transport in dirty:
            transport.flush()
