"""Shared fixtures: real services started once per session, a real papo per test.

Set ``PAPO_TEST_DATABASE_URL``, ``PAPO_TEST_REDIS_URL``, ``PAPO_TEST_MONGO_URL`` or
``PAPO_TEST_S3_URL`` to use services you run yourself; the rest are started by the same
launcher ``papo dev`` uses, on random loopback ports, and stopped at the end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvloop
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient
from pymongo.uri_parser import parse_uri
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websocket_connect

from papo.client import PapoClient
from papo.server.app import create_app
from papo.server.config import Settings
from papo.server.embedded import EmbeddedServices
from papo.server.embedded.launcher import SERVICE_NAMES
from papo.server.prepare import prepare_services
from papo.server.runner import RunningServer, start_in_loop
from tests.proxy import TcpProxy


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, the loop `papo serve` runs on (its transports differ)."""
    return {"uvloop": uvloop.new_event_loop}


TEST_JWT_SECRET = secrets.token_urlsafe(48)
# Settings every test server shares, in-process or a `papo serve` child.
FAST_TEST_ENV = {
    "PAPO_LOG_LEVEL": "WARNING",
    "PAPO_DRAIN_SECONDS": "1",
    # Cheap hashes keep the suite fast; test_passwords checks real-cost behaviour.
    "PAPO_ARGON2_TIME_COST": "1",
    "PAPO_ARGON2_MEMORY_KIB": "8192",
    # Every test logs in from 127.0.0.1; rate-limit tests use their own limits.
    "PAPO_RATE_LOGIN_IP": "100000/60",
    "PAPO_RATE_LOGIN_ACCOUNT": "100000/60",
    "PAPO_RATE_REGISTER_IP": "100000/60",
}


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    given = {
        name: url
        for name in SERVICE_NAMES
        if (url := os.environ.get(f"PAPO_TEST_{name.upper()}_URL"))
    }
    missing = [name for name in SERVICE_NAMES if name not in given]
    data_dir = Path(tempfile.mkdtemp(prefix="papo-test-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as another user when we are root
    engines = EmbeddedServices(data_dir, missing, durable=False)
    try:
        urls = {**given, **engines.start()}
        yield urls
    finally:
        engines.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def base_settings(service_urls: dict[str, str]) -> Settings:
    env = {
        "PAPO_HOST": "127.0.0.1",
        "PAPO_PORT": "0",
        "PAPO_JWT_SECRET": TEST_JWT_SECRET,
        "PAPO_DATABASE_URL": service_urls["database"],
        "PAPO_REDIS_URL": service_urls["redis"],
        "PAPO_MONGO_URL": service_urls["mongo"],
        "PAPO_S3_URL": service_urls["s3"],
        **FAST_TEST_ENV,
    }
    settings = Settings.from_env(env)
    await prepare_services(settings)
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


def on_one_node(settings: Settings) -> Settings:
    """``settings`` with the memory broker: one node, which numbers each message, fans
    it out and then stores it (the suite's default shares Redis, as several nodes do)."""
    return dataclasses.replace(settings, scale=dataclasses.replace(settings.scale, broker="memory"))


@pytest.fixture(params=["shared-broker", "one-node"])
def both_shapes(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """For tests of chat semantics that each message path must keep."""
    return base_settings if request.param == "shared-broker" else on_one_node(base_settings)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample from a /metrics page (0 if papo has not reported it yet)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@asynccontextmanager
async def unanswering_mongo() -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    """A real MongoDB client whose server accepts connections and never answers: every
    operation fails after a short server selection. (A port nobody listens on would do
    too, but closing the client then can leak the socket of a connect in progress.)"""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=300
    )
    try:
        yield client
    finally:
        await client.close()
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


@pytest.fixture
async def mongo_proxy(base_settings: Settings) -> AsyncIterator[tuple[TcpProxy, str]]:
    """The test MongoDB-wire server behind a ``TcpProxy``, and the URL that goes through it."""
    assert base_settings.urls.mongo
    host, port = parse_uri(base_settings.urls.mongo)["nodelist"][0]
    proxy = TcpProxy(host, port)
    proxy_port = await proxy.start()
    yield proxy, f"mongodb://127.0.0.1:{proxy_port}/?directConnection=true"
    await proxy.stop()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[RunningServer]:
    """A real papo on a random loopback port, in the test's event loop."""
    running = await start_in_loop(create_app(settings), settings)
    try:
        yield running
    finally:
        await running.stop()


@asynccontextmanager
async def http_to(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a papo started with ``settings`` (stopped on exit)."""
    async with serving(settings) as running, httpx.AsyncClient(base_url=running.url) as client:
        yield client


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    async with serving(settings) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@dataclass
class Session:
    """A registered, logged-in account as a client sees it."""

    user_id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(6)}@example.com"


async def register_and_login(
    http: httpx.AsyncClient, *, prefix: str = "user", password: str = "correct horse battery"
) -> Session:
    email = unique_email(prefix)
    registered = await http.post(
        "/api/auth/register",
        json={"email": email, "password": password, "display_name": prefix.title()},
    )
    assert registered.status_code == 201, registered.text
    logged_in = await http.post("/api/auth/login", json={"email": email, "password": password})
    assert logged_in.status_code == 200, logged_in.text
    body = logged_in.json()
    return Session(body["user"]["id"], email, password, body["access_token"], body["refresh_token"])


async def make_role(settings: Settings, user_id: str, role: str) -> None:
    """Promote an account directly in the database (the way papo users create-admin does)."""
    assert settings.urls.database
    connection = await asyncpg.connect(settings.urls.database)
    try:
        await connection.execute("UPDATE users SET role = $2 WHERE id = $1::uuid", user_id, role)
    finally:
        await connection.close()


@pytest.fixture
async def admin(http: httpx.AsyncClient, settings: Settings) -> Session:
    session = await register_and_login(http, prefix="admin")
    await make_role(settings, session.user_id, "admin")
    return session


@pytest.fixture
async def customer(http: httpx.AsyncClient) -> Session:
    return await register_and_login(http, prefix="customer")


def ws_url(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


async def member_that_stops_reading(
    server: RunningServer, session: Session, room: str
) -> ClientConnection:
    """A raw client in ``room`` on a socket with a 4 KiB receive buffer that reads
    nothing more until the test calls ``recv``: the server's buffers fill behind it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = await websocket_connect(
        ws_url(server),
        sock=sock,
        max_size=None,
        max_queue=1,  # websockets stops reading the socket while a frame waits here
        additional_headers={"Authorization": f"Bearer {session.access_token}"},
    )
    await ws.recv()  # the welcome
    await ws.send(msgspec.json.encode({"type": "room.join", "id": 1, "room": room}).decode())
    while msgspec.json.decode(await ws.recv()).get("id") != 1:
        pass
    return ws


@pytest.fixture
async def connect(server: RunningServer) -> AsyncIterator[Callable[..., Awaitable[PapoClient]]]:
    """Open real WebSocket clients against the test server; all closed at the end."""
    opened: list[PapoClient] = []

    async def open_client(session: Session, **options: object) -> PapoClient:
        client = await PapoClient.connect(ws_url(server), session.access_token, **options)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


SESSION_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the screenshots this run's browser tests wrote, so a CI log points at them."""
    folder = Path(os.environ.get("PAPO_TEST_SCREENSHOTS", "test-artifacts/screenshots"))
    shots = sorted(
        shot
        for shot in (folder.glob("*.png") if folder.is_dir() else ())
        if shot.stat().st_mtime >= SESSION_STARTED
    )
    if shots:
        terminalreporter.section("screenshots")
        for shot in shots:
            terminalreporter.write_line(f"{shot.resolve()}  ({shot.stat().st_size} bytes)")
