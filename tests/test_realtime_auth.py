"""WebSocket authentication: handshake header, ?token=, first frame, expiry and refresh."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from papo.client import PapoClient, PapoClientError
from papo.server.config import Settings
from papo.server.runner import RunningServer
from tests.conftest import Session, register_and_login, serving, ws_url


async def _frames_until_close(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    frames = []
    try:
        while True:
            frames.append(msgspec.json.decode(await asyncio.wait_for(ws.recv(), 10)))
    except ConnectionClosed:
        return frames, ws.close_code


async def test_browsers_pass_the_token_in_the_query(
    server: RunningServer, customer: Session
) -> None:
    async with connect(f"{ws_url(server)}?token={customer.access_token}") as ws:
        welcome = msgspec.json.decode(await ws.recv())
    assert welcome["type"] == "welcome"
    assert welcome["user"]["id"] == customer.user_id


async def test_a_first_frame_can_authenticate(server: RunningServer, customer: Session) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send(
            msgspec.json.encode(
                {"type": "auth", "id": "a1", "token": customer.access_token}
            ).decode()
        )
        welcome = msgspec.json.decode(await ws.recv())
        ok = msgspec.json.decode(await ws.recv())
    assert welcome["type"] == "welcome"
    assert ok == {"type": "ok", "id": "a1", "data": {"session": welcome["session"]}}


async def test_a_bad_token_is_refused_with_4003(server: RunningServer, customer: Session) -> None:
    async with connect(ws_url(server), additional_headers={"Authorization": "Bearer nope"}) as ws:
        frames, code = await _frames_until_close(ws)
    assert code == 4003
    assert frames[0]["type"] == "error"
    assert frames[0]["code"] == "token_invalid"


async def test_a_first_frame_that_is_not_auth_is_refused(server: RunningServer) -> None:
    async with connect(ws_url(server)) as ws:
        await ws.send('{"type": "ping", "id": 1}')
        frames, code = await _frames_until_close(ws)
    assert code == 4003
    assert frames[0]["code"] == "token_missing"
    assert frames[0]["field"] == "token"


async def test_a_disabled_user_cannot_connect(
    http: httpx.AsyncClient, server: RunningServer, admin: Session
) -> None:
    victim = await register_and_login(http, prefix="victim")
    await http.patch(f"/api/users/{victim.user_id}", json={"disabled": True}, headers=admin.headers)
    async with connect(
        ws_url(server), additional_headers={"Authorization": f"Bearer {victim.access_token}"}
    ) as ws:
        frames, code = await _frames_until_close(ws)
    assert code == 4003
    assert frames[0]["code"] == "account_disabled"


async def test_bots_connect_with_their_token(
    http: httpx.AsyncClient, server: RunningServer, admin: Session
) -> None:
    created = await http.post("/api/bots", json={"display_name": "Helper"}, headers=admin.headers)
    async with await PapoClient.connect(ws_url(server), created.json()["token"]) as bot:
        assert bot.welcome["role"] == "bot"
        assert bot.welcome["expires_at"] is None, "bot tokens are revoked, not expired"


@pytest.fixture
async def quick_auth_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    auth = dataclasses.replace(base_settings.auth, access_token_seconds=10)
    realtime = dataclasses.replace(base_settings.realtime, auth_timeout_seconds=0.5)
    settings = dataclasses.replace(base_settings, auth=auth, realtime=realtime)
    async with serving(settings) as running:
        hub = running.app.state.papo.realtime.hub
        # Warn 8 s before expiry so the 10-second tokens show the whole cycle quickly.
        hub.limits = dataclasses.replace(hub.limits, token_warning_seconds=8)
        yield running


async def test_no_auth_frame_in_time_closes_with_4010(quick_auth_server: RunningServer) -> None:
    async with connect(ws_url(quick_auth_server)) as ws:
        frames, code = await _frames_until_close(ws)
    assert code == 4010
    assert frames[0]["code"] == "token_missing"


async def _session_on(server: RunningServer) -> Session:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await register_and_login(http)


async def test_an_expiring_token_is_warned_then_closed_with_4001(
    quick_auth_server: RunningServer,
) -> None:
    session = await _session_on(quick_auth_server)
    client = await PapoClient.connect(
        ws_url(quick_auth_server), session.access_token, reconnect=False
    )
    warning = await client.next_event(5)
    assert warning["type"] == "token.expiring"
    assert warning["expires_at"] == client.welcome["expires_at"]
    closed = await client.next_event(15)
    assert closed == {"type": "closed", "code": 4001}


async def test_refreshing_over_the_socket_keeps_it_open(quick_auth_server: RunningServer) -> None:
    session = await _session_on(quick_auth_server)
    client = await PapoClient.connect(
        ws_url(quick_auth_server), session.access_token, reconnect=False
    )
    assert (await client.next_event(5))["type"] == "token.expiring"
    async with httpx.AsyncClient(base_url=quick_auth_server.url) as http:
        fresh = await http.post("/api/auth/refresh", json={"refresh_token": session.refresh_token})
    data = await client.request("auth.refresh", token=fresh.json()["access_token"])
    assert data["expires_at"] > client.welcome["expires_at"]
    await asyncio.sleep(max(0.0, client.welcome["expires_at"] - time.time() + 1))
    pong = await client.request("ping")
    assert pong["ts"] > client.welcome["expires_at"], "still open past the first expiry"
    other = await _session_on(quick_auth_server)
    with pytest.raises(PapoClientError) as wrong_user:
        await client.request("auth.refresh", token=other.access_token)
    assert wrong_user.value.code == "forbidden"
    await client.close()


@pytest.fixture
async def heartbeat_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    realtime = dataclasses.replace(base_settings.realtime, heartbeat_seconds=1.0)
    settings = dataclasses.replace(base_settings, realtime=realtime)
    async with serving(settings) as running:
        yield running


async def test_a_dead_peer_is_dropped_by_heartbeats(heartbeat_server: RunningServer) -> None:
    """A peer that vanished without closing (no pongs) leaves within two heartbeats."""
    session = await _session_on(heartbeat_server)
    reader, writer = await asyncio.open_connection("127.0.0.1", heartbeat_server.port)
    writer.write(
        (
            f"GET /ws?token={session.access_token} HTTP/1.1\r\nHost: localhost\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    assert b"101" in await reader.readline()
    hub = heartbeat_server.app.state.papo.realtime.hub
    deadline = time.monotonic() + 2
    while not hub.connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert len(hub.connections) == 1
    # From here on the peer never reads or answers a ping again.
    deadline = time.monotonic() + 5
    while hub.connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    assert hub.connections == {}, "the silent peer was dropped"
    writer.close()
