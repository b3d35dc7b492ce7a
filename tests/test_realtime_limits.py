"""Bad frames get typed errors, limits hold, slow consumers never slow a room."""

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
from tests.conftest import (
    Session,
    member_that_stops_reading,
    metric,
    register_and_login,
    serving,
    ws_url,
)


async def _raw(server: RunningServer, session: Session, **options: Any) -> ClientConnection:
    ws = await connect(
        ws_url(server),
        additional_headers={"Authorization": f"Bearer {session.access_token}"},
        **options,
    )
    welcome = msgspec.json.decode(await ws.recv())
    assert welcome["type"] == "welcome"
    return ws


async def _close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed:
        return ws.close_code


async def _reply(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = msgspec.json.decode(await asyncio.wait_for(ws.recv(), 5))
        if frame["type"] in ("ok", "error"):
            return frame


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        (b'{"type": "teleport", "id": "x1"}', "unknown_type", "type"),
        (b'{"id": "x1", "room": "r"}', "validation_failed", "type"),
        (
            b'{"type": "message.send", "id": "x1", "room": "r", "text": 5, "client_id": "c"}',
            "validation_failed",
            "text",
        ),
        (
            b'{"type": "message.send", "id": "x1", "room": "r", "client_id": "c"}',
            "validation_failed",
            "text",
        ),
        (
            b'{"type": "message.send", "id": "x1", "room": "bad room!", "text": "t", '
            b'"client_id": "c"}',
            "validation_failed",
            "room",
        ),
        (b'{"type": "ping", "id": "x1", "extra": true}', "validation_failed", "extra"),
        (
            b'{"type": "history", "id": "x1", "room": "r", "limit": 1000}',
            "validation_failed",
            "limit",
        ),
        (b'{"type": "resume", "id": "x1", "rooms": {"r": -3}}', "validation_failed", "rooms[...]"),
        (
            b'{"type": "message.send", "id": "x1", "room": "nope", "text": "t", "client_id": "c"}',
            "not_found",
            "room",
        ),
        (b'{"type": "auth", "id": "x1", "token": "t"}', "conflict", None),
    ],
)
async def test_bad_frames_get_typed_errors_and_the_connection_stays_usable(
    server: RunningServer, customer: Session, frame: bytes, code: str, field: str | None
) -> None:
    ws = await _raw(server, customer)
    await ws.send(frame.decode())
    error = await _reply(ws)
    assert error["type"] == "error"
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]
    assert error["id"] == "x1", "the error is correlated even when the frame is invalid"
    await ws.send('{"type": "ping", "id": "after"}')
    assert (await _reply(ws))["id"] == "after"
    await ws.close()


async def test_bad_json_and_binary_frames(server: RunningServer, customer: Session) -> None:
    ws = await _raw(server, customer)
    await ws.send("{not json")
    error = await _reply(ws)
    assert error["code"] == "invalid_json"
    assert "id" not in error or error["id"] is None
    await ws.send(b"\x00\x01binary")
    assert (await _reply(ws))["code"] == "binary_frame"
    await ws.send("[1, 2]")
    assert (await _reply(ws))["code"] == "validation_failed"
    await ws.send('{"type": "ping", "id": 7}')
    assert (await _reply(ws))["id"] == 7
    await ws.close()


async def test_oversized_frames_close_with_1009(server: RunningServer, customer: Session) -> None:
    ws = await _raw(server, customer, max_size=None)
    await ws.send('{"type": "ping", "pad": "' + "x" * 70_000 + '"}')
    assert await _close_code(ws) == 1009


async def test_overlong_messages_are_refused_with_the_field(
    http: httpx.AsyncClient, connect: Any, settings: Settings
) -> None:
    client: PapoClient = await connect(await register_and_login(http))
    room = (await client.request("room.create", name="r"))["id"]
    await client.request("room.join", room=room)
    too_long = "x" * (settings.realtime.max_message_length + 1)
    with pytest.raises(PapoClientError) as caught:
        await client.request("message.send", room=room, text=too_long, client_id="c")
    assert caught.value.code == "message_too_long"
    assert caught.value.field == "text"


@pytest.fixture
async def strict_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    realtime = dataclasses.replace(
        base_settings.realtime,
        frames_per_second=10_000,
        frame_burst=10_000,
        max_rooms_per_connection=2,
        outbox_frames=32,
        max_message_length=16_000,
    )
    settings = dataclasses.replace(base_settings, realtime=realtime)
    async with serving(settings) as running:
        yield running


@pytest.fixture
async def rate_limited_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    realtime = dataclasses.replace(base_settings.realtime, frames_per_second=5, frame_burst=10)
    settings = dataclasses.replace(base_settings, realtime=realtime)
    async with serving(settings) as running:
        yield running


async def test_frame_rate_limit_then_close_if_it_persists(
    rate_limited_server: RunningServer, http: httpx.AsyncClient
) -> None:
    session = await register_and_login(http)
    ws = await _raw(rate_limited_server, session)
    for n in range(12):
        await ws.send(f'{{"type": "ping", "id": {n}}}')
    replies = [await _reply(ws) for _ in range(12)]
    codes = [r.get("code", "ok") if r["type"] == "error" else "ok" for r in replies]
    assert codes[:10] == ["ok"] * 10
    assert "rate_limited" in codes[10:]
    for n in range(80):  # keep hammering: warned, then disconnected
        await ws.send(f'{{"type": "ping", "id": {100 + n}}}')
    assert await _close_code(ws) == 4009


async def test_rooms_per_connection_are_capped(
    strict_server: RunningServer, http: httpx.AsyncClient
) -> None:
    session = await register_and_login(http)
    async with await PapoClient.connect(ws_url(strict_server), session.access_token) as client:
        rooms = [(await client.request("room.create", name=f"r{i}"))["id"] for i in range(3)]
        await client.request("room.join", room=rooms[0])
        await client.request("room.join", room=rooms[1])
        with pytest.raises(PapoClientError) as caught:
            await client.request("room.join", room=rooms[2])
        assert caught.value.code == "too_many_rooms"
        await client.request("room.leave", room=rooms[0])
        await client.request("room.join", room=rooms[2])


async def test_a_client_that_stops_reading_is_closed_without_slowing_the_room(
    strict_server: RunningServer, http: httpx.AsyncClient
) -> None:
    talker_s, fast_s, slow_s = [await register_and_login(http, prefix=p) for p in "tfs"]
    url = ws_url(strict_server)
    talker = await PapoClient.connect(url, talker_s.access_token)
    fast = await PapoClient.connect(url, fast_s.access_token)
    room = (await talker.request("room.create", name="firehose"))["id"]
    await talker.request("room.join", room=room)
    await fast.request("room.join", room=room)
    # The slow client: a tiny receive buffer, and it stops reading after joining.
    slow = await member_that_stops_reading(strict_server, slow_s, room)

    # ~8 MB: more than the kernel's socket buffers (up to 4 MB) plus the 32-frame outbox.
    text = "y" * 15_000
    total = 540
    started = time.perf_counter()
    for batch in range(0, total, 30):
        await asyncio.gather(*(talker.send_message(room, text) for _ in range(batch, batch + 30)))
    received = 0
    while received < total:
        event = await fast.next_event(10)
        if event["type"] == "message":
            received += 1
    elapsed = time.perf_counter() - started
    async with httpx.AsyncClient() as probe:
        metrics = (await probe.get(f"{strict_server.url}/metrics")).text
    assert metric(metrics, "papo_ws_slow_consumer_closes_total") == 1
    assert received == total, "the reading client got every message"
    assert elapsed < 20
    # When the slow client finally reads, it finds the documented close code.
    assert await _close_code(slow) == 4008
    await slow.close()
    await talker.close()
    await fast.close()
