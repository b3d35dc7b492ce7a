"""A TCP proxy in front of a real backing service, for the failures a test needs the
network to produce: a reply that never comes back, or a service that stops answering."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Passes bytes both ways between clients and ``host:port``, until told otherwise:

    - ``armed`` with a marker, it passes the next request that holds it to the service
      and then drops that connection instead of passing the reply back: the command
      takes effect, its client never hears of it (``cuts`` counts these);
    - ``freeze()`` holds every byte in both directions, on open and new connections,
      as a service that hangs (or a partition that drops packets) looks to a client;
    - ``stall(marker)`` holds only requests that hold ``marker`` (writes, say, while
      reads go on) until ``unstall()``, as a store whose journal is slow looks;
      ``stalled`` counts the requests held so far;
    - ``down()`` drops every connection and refuses new ones until ``up()``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.armed: bytes | None = None
        self.cuts = 0
        self.connections = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stall: bytes | None = None
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self.stalled = 0
        self._down = False
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def freeze(self) -> None:
        self._flowing.clear()

    def stall(self, marker: bytes) -> None:
        self._stall = marker
        self._unstalled.clear()

    def unstall(self) -> None:
        self._stall = None
        self._unstalled.set()

    def down(self) -> None:
        self._down = True
        for link in list(self._links):
            link.cancel()

    def up(self) -> None:
        self._down = False

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self._down:
            writer.close()
            return
        link = asyncio.current_task()
        assert link is not None
        self._links.add(link)
        try:
            await self._flowing.wait()
            await self._pass(reader, writer)
        finally:
            self._links.discard(link)
            writer.close()

    async def _pass(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        cut = asyncio.Event()

        async def to_server() -> None:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self._stall is not None and self._stall in data:
                    self.stalled += 1
                    await self._unstalled.wait()
                if self.armed is not None and self.armed in data:
                    self.armed = None
                    cut.set()  # before the command goes on, so its reply finds it set
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_client() -> None:
            while data := await upstream_reader.read(65536):
                await self._flowing.wait()
                if cut.is_set():
                    self.cuts += 1
                    break
                writer.write(data)
                await writer.drain()

        pipes = [asyncio.create_task(to_server()), asyncio.create_task(to_client())]
        try:
            with contextlib.suppress(ConnectionError):
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            upstream_writer.close()
