"""Stopping papo ends: background tasks that lose their cancellation are asked again,
and a stopping step that a backing service holds up is skipped, not waited on."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry

from papo.client import PapoClient
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import shutdown_step, stop_task
from papo.persistence.presence_redis import RedisPresence
from papo.persistence.redis import connect_redis
from papo.protocol.frames import UserRef
from papo.server.config import Settings
from tests.conftest import register_and_login, serving, ws_url
from tests.proxy import TcpProxy


async def _upkeep_loop(rounds: list[int]) -> None:
    """What redis-py on Python 3.11 can make of a loop of commands: the first
    cancellation lands mid-command and is lost (the command returns normally), so the
    loop goes on to its next round."""
    while True:
        rounds.append(len(rounds) + 1)
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if len(rounds) == 1:
                continue  # lost inside the library
            raise
        await asyncio.sleep(0.2)


async def test_a_task_that_loses_its_cancellation_is_cancelled_again() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_upkeep_loop(rounds))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    assert await stop_task(task) is True
    assert task.cancelled()
    assert time.monotonic() - started < 1
    assert rounds == [1, 2], "the first cancellation was lost; a second one ended it"


async def test_a_task_that_never_ends_is_left_behind_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn(), name="papo-stubborn")
    await asyncio.sleep(0)  # running, so a cancellation reaches its code
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="papo.hub"):
        assert await stop_task(task, patience=0.3) is False
    assert 0.3 <= time.monotonic() - started < 1
    assert any(getattr(r, "task", None) == "papo-stubborn" for r in caplog.records)
    release.set()
    await task


async def test_an_error_a_stopped_task_ended_with_is_logged_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> None:
        raise RuntimeError("store went away")

    task = asyncio.create_task(failing(), name="papo-failing")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="papo.hub"):
        assert await stop_task(task) is True
    assert [getattr(r, "error", "") for r in caplog.records] == ["RuntimeError('store went away')"]


async def test_a_step_that_overruns_or_fails_does_not_keep_the_next_from_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def hangs() -> None:
        ran.append("hangs")
        await asyncio.Event().wait()

    async def fails() -> None:
        ran.append("fails")
        raise ConnectionError("no answer")

    async def closes() -> None:
        ran.append("closes")

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="papo.hub"):
        await shutdown_step(hangs(), 0.2, "hub stop")
        await shutdown_step(fails(), 0.2, "closing backing services")
        await shutdown_step(closes(), 0.2, "last")
    assert ran == ["hangs", "fails", "closes"]
    assert time.monotonic() - started < 1
    steps = [(r.getMessage(), getattr(r, "step", None)) for r in caplog.records]
    assert steps == [
        ("shutdown step overran; skipped", "hub stop"),
        ("shutdown step failed", "closing backing services"),
    ]


async def test_presence_stops_while_its_upkeep_is_talking_to_redis(
    base_settings: Settings,
) -> None:
    """Stopped at 60 random points of an upkeep that is always mid-command, presence
    stops every time. On Python 3.11, redis-py loses a cancellation that lands at the
    wrong moment of a command (``asyncio.wait_for`` around each send, and hiredis's
    zero-timeout connection check): a single ``cancel()`` left about half of these
    stops waiting forever."""
    assert base_settings.urls.redis
    redis = connect_redis(base_settings.urls.redis)
    chance = random.Random(7)
    hung = 0
    try:
        for n in range(60):
            presence = RedisPresence(
                redis, HubMetrics(CollectorRegistry()), node_id=f"stop-{n}", reap_seconds=0
            )
            await presence.start(_ignore_changes)
            await asyncio.sleep(chance.random() * 0.003)
            stopping = asyncio.ensure_future(presence.stop())
            done, _ = await asyncio.wait({stopping}, timeout=2)
            if not done:
                hung += 1
                await stop_task(stopping)  # so that this test ends either way
    finally:
        await redis.aclose()
    assert hung == 0, f"{hung} of 60 stops did not end within 2 s"


async def _ignore_changes(room: str, user: UserRef, online: bool) -> None:
    pass


async def test_stopping_papo_while_redis_does_not_answer_ends_and_names_what_it_skipped(
    base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert base_settings.urls.redis
    redis = urlsplit(base_settings.urls.redis)
    assert redis.hostname
    assert redis.port
    proxy = TcpProxy(redis.hostname, redis.port)
    port = await proxy.start()
    urls = dataclasses.replace(base_settings.urls, redis=f"redis://127.0.0.1:{port}/0")
    settings = dataclasses.replace(base_settings, urls=urls)
    try:
        async with serving(settings) as running:
            async with httpx.AsyncClient(base_url=running.url) as http:
                session = await register_and_login(http, prefix="frozen")
            client = await PapoClient.connect(ws_url(running), session.access_token)
            for name in ("frozen-1", "frozen-2", "frozen-3"):  # presence entries in Redis
                room = (await client.request("room.create", name=name))["id"]
                await client.request("room.join", room=room)
            proxy.freeze()  # Redis hangs: every command waits for a reply that never comes
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="papo.hub"):
                await asyncio.wait_for(running.stop(), 30)
            stopped_in = time.monotonic() - started
            await client.close()
    finally:
        await proxy.stop()

    # One step's bound (1 s here) for the presence clean-up that hangs, with room to
    # spare; unbounded, each of its four entries would wait out Redis's 5 s timeout.
    assert stopped_in < 4, f"stopping took {stopped_in:.1f} s"
    skipped = [getattr(r, "step", None) for r in caplog.records if "overran" in r.getMessage()]
    assert skipped == ["presence"], "only presence's clean-up was cut short; the broker stopped"
