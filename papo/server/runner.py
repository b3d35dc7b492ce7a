"""Runs the app under uvicorn; shared by ``papo serve``, ``papo dev`` and the tests."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from starlette.applications import Starlette

from papo.server.config import Settings
from papo.server.ws import websocket_protocol


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=max(1, int(settings.http.drain_seconds)),
        # /ws is papo's own protocol object (papo.server.ws), not an ASGI endpoint.
        ws=cast(Any, websocket_protocol(app)),
    )


@dataclass(slots=True)
class RunningServer:
    """A server started in the current event loop, on a socket it already owns."""

    app: Starlette
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start_in_loop(app: Starlette, settings: Settings) -> RunningServer:
    """Start on ``settings.http`` (port 0 picks a free one) and wait until it serves."""
    sock = bind_socket(settings.http.host, settings.http.port)
    server = uvicorn.Server(uvicorn_config(app, settings))
    # ``_serve`` skips uvicorn's signal capture: whoever embeds us owns the signals.
    task = asyncio.create_task(server._serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("papo stopped during start-up")
        await asyncio.sleep(0.01)
    return RunningServer(app, server, task, sock.getsockname()[1])
