"""python-socketio (ASGI) under uvicorn: rooms and emit, the library's own way."""

from __future__ import annotations

import sys
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
app = socketio.ASGIApp(sio)


@sio.on("join")  # type: ignore[untyped-decorator]
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "joined"


@sio.on("pub")  # type: ignore[untyped-decorator]
async def pub(sid: str, frame: dict[str, Any]) -> None:
    await sio.emit("msg", frame["data"], room=frame["room"])


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
