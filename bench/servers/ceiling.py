"""The ceiling: a minimal websockets broadcast server on uvloop, no auth, no storage.

Bench protocol: {"op": "join", "room": r} subscribes; {"op": "pub", "room": r,
"data": s} sends ``s`` to every member of ``r``, serialized once via ``broadcast()``.
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOMS: dict[str, set[ServerConnection]] = {}


async def handler(ws: ServerConnection) -> None:
    joined: list[str] = []
    try:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["op"] == "pub":
                broadcast(ROOMS.get(frame["room"], ()), frame["data"])
            elif frame["op"] == "join":
                ROOMS.setdefault(frame["room"], set()).add(ws)
                joined.append(frame["room"])
                await ws.send('{"op":"joined"}')
    finally:
        for room in joined:
            ROOMS.get(room, set()).discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
