"""Backends and bots publish through REST; nodes drain cleanly and lose no acked message."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from papo.client import PapoClient
from papo.server.app import create_app
from papo.server.config import Settings
from papo.server.embedded.process import free_port
from papo.server.runner import start_in_loop
from tests.conftest import TEST_JWT_SECRET, Session, register_and_login, ws_url

Connect = Callable[..., Awaitable[PapoClient]]


async def test_a_bot_posts_into_a_room_and_members_see_it(
    http: httpx.AsyncClient, connect: Connect, admin: Session
) -> None:
    member = await register_and_login(http)
    client = await connect(member)
    room = (await client.request("room.create", name="orders"))["id"]
    await client.request("room.join", room=room)
    bot = await http.post("/api/bots", json={"display_name": "Order Bot"}, headers=admin.headers)
    bot_headers = {"authorization": f"Bearer {bot.json()['token']}"}
    posted = await http.post(
        f"/api/rooms/{room}/messages",
        json={"text": "order #7 shipped", "client_id": "o7"},
        headers=bot_headers,
    )
    assert posted.status_code == 201, posted.text
    event = await client.next_event(5)
    while event["type"] != "message":
        event = await client.next_event(5)
    assert event["text"] == "order #7 shipped"
    assert event["sender"]["name"] == "Order Bot"
    assert event["seq"] == posted.json()["seq"]
    again = await http.post(
        f"/api/rooms/{room}/messages",
        json={"text": "order #7 shipped", "client_id": "o7"},
        headers=bot_headers,
    )
    assert again.json()["duplicate"] is True
    assert again.json()["seq"] == posted.json()["seq"]


async def test_only_members_or_publishers_may_post(
    http: httpx.AsyncClient, connect: Connect, customer: Session
) -> None:
    owner = await connect(await register_and_login(http, prefix="owner"))
    room = (await owner.request("room.create", name="closed", visibility="private"))["id"]
    refused = await http.post(
        f"/api/rooms/{room}/messages", json={"text": "let me in"}, headers=customer.headers
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_a_member"
    missing = await http.post(
        "/api/rooms/r_nothere/messages", json={"text": "hi"}, headers=customer.headers
    )
    assert missing.status_code == 404


async def test_user_events_reach_every_connection_of_the_user(
    http: httpx.AsyncClient, connect: Connect, admin: Session
) -> None:
    target = await register_and_login(http, prefix="target")
    phone, laptop = await connect(target), await connect(target)
    pushed = await http.post(
        f"/api/users/{target.user_id}/events",
        json={"event": "order.shipped", "data": {"order": 7}},
        headers=admin.headers,
    )
    assert pushed.status_code == 202
    assert pushed.json() == {"user": target.user_id, "online": True}
    for device in (phone, laptop):
        event = await device.next_event(5)
        assert event["type"] == "user.event"
        assert event["event"] == "order.shipped"
        assert event["data"] == {"order": 7}
        assert event["sender"]["id"] == admin.user_id


async def test_user_events_are_for_admins_and_bots(
    http: httpx.AsyncClient, customer: Session, admin: Session
) -> None:
    refused = await http.post(
        f"/api/users/{customer.user_id}/events", json={"event": "x"}, headers=customer.headers
    )
    assert refused.status_code == 403
    unknown = await http.post(
        f"/api/users/{uuid.uuid4()}/events", json={"event": "x"}, headers=admin.headers
    )
    assert unknown.status_code == 404
    bad_name = await http.post(
        f"/api/users/{customer.user_id}/events",
        json={"event": "Not Valid!"},
        headers=admin.headers,
    )
    assert bad_name.status_code == 422
    assert bad_name.json()["error"]["field"] == "event"


async def test_draining_tells_clients_to_reconnect_elsewhere(base_settings: Settings) -> None:
    running = await start_in_loop(create_app(base_settings), base_settings)
    async with httpx.AsyncClient(base_url=running.url) as http:
        session = await register_and_login(http)
    client = await PapoClient.connect(ws_url(running), session.access_token, reconnect=False)
    room = (await client.request("room.create", name="r"))["id"]
    await client.request("room.join", room=room)
    ack = await client.send_message(room, "before the restart")
    await running.stop()
    closed = await client.next_event(10)
    while closed["type"] != "closed":
        closed = await client.next_event(10)
    assert closed["code"] == 1012
    again = await start_in_loop(create_app(base_settings), base_settings)
    try:
        async with await PapoClient.connect(ws_url(again), session.access_token) as client2:
            history = await client2.request("history", room=room)
        assert [m["seq"] for m in history["messages"]] == [ack["seq"]]
    finally:
        await again.stop()


def _serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    urls = settings.urls
    assert urls.database
    assert urls.mongo
    assert urls.redis
    assert urls.s3
    env = {
        "PATH": os.environ["PATH"],
        "PAPO_PORT": str(port),
        "PAPO_DATABASE_URL": urls.database,
        "PAPO_MONGO_URL": urls.mongo,
        "PAPO_REDIS_URL": urls.redis,
        "PAPO_S3_URL": urls.s3,
        "PAPO_JWT_SECRET": TEST_JWT_SECRET,
        "PAPO_ARGON2_TIME_COST": "1",
        "PAPO_ARGON2_MEMORY_KIB": "8192",
        "PAPO_DRAIN_SECONDS": "3",
        "PAPO_WS_FRAMES_PER_SECOND": "10000",
        "PAPO_WS_FRAME_BURST": "10000",
        "PAPO_RATE_LOGIN_IP": "100000/60",
        "PAPO_RATE_REGISTER_IP": "100000/60",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "papo.server.cli", "serve"], env=env, stdout=out, stderr=out
        )


async def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as probe:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(await asyncio.to_thread(log.read_text))
            try:
                if (await probe.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(await asyncio.to_thread(log.read_text))


@pytest.mark.slow
async def test_a_restarted_papo_serve_loses_no_acked_message(
    base_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", tmp_path / "serve.log"
    first = _serve(base_settings, port, log)
    try:
        await _wait_ready(url, first, log)
        async with httpx.AsyncClient(base_url=url) as http:
            session = await register_and_login(http)
    except BaseException:
        first.kill()
        first.wait(10)
        raise
    ws = f"ws://127.0.0.1:{port}/ws"
    client = await PapoClient.connect(ws, session.access_token, max_backoff=0.5)
    room = (await client.request("room.create", name="durable"))["id"]
    await client.request("room.join", room=room)
    acked: list[int] = []
    halfway = asyncio.Event()

    async def sender() -> None:
        for n in range(400):
            acked.append((await client.send_message(room, f"m{n}"))["seq"])
            if len(acked) == 50:
                halfway.set()

    sending = asyncio.create_task(sender())
    await asyncio.wait_for(halfway.wait(), 30)
    first.send_signal(signal.SIGTERM)  # a rolling restart mid-stream
    await asyncio.to_thread(first.wait, 30)
    second = _serve(base_settings, port, log)
    try:
        await _wait_ready(url, second, log)
        await asyncio.wait_for(sending, 60)
        history = await client.request("history", room=room, limit=200, before=None)
        seqs: list[int] = []
        before = None
        while True:
            page = await client.request(
                "history", room=room, limit=200, **({"before": before} if before else {})
            )
            seqs = [m["seq"] for m in page["messages"]] + seqs
            if not page["has_more"]:
                break
            before = page["messages"][0]["seq"]
        assert history["messages"]
        assert sorted(acked) == sorted(set(acked)), "no message acked twice under two seqs"
        assert set(acked) <= set(seqs), "every acknowledged message survived the restart"
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) == 400, "client retries across the restart stored each message once"
        assert 1012 in client.close_codes
    finally:
        await client.close()
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
