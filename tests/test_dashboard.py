"""The dashboard channel over the WebSocket contract: who may watch, and what they see."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from papo.client import PapoClient, PapoClientError
from papo.server.runner import RunningServer
from tests.conftest import Session, make_role, register_and_login

Connect = Callable[..., Awaitable[PapoClient]]


async def _stats(client: PapoClient, seconds: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        event = await client.next_event(max(0.01, deadline - time.monotonic()))
        if event["type"] == "dashboard.stats":
            return event


async def test_customers_may_not_watch_the_dashboard(connect: Connect, customer: Session) -> None:
    client = await connect(customer)
    with pytest.raises(PapoClientError) as refused:
        await client.request("dashboard.subscribe")
    assert refused.value.code == "forbidden"


async def test_an_agent_sees_live_counters_until_unsubscribing(
    connect: Connect, http: httpx.AsyncClient, settings: Any, customer: Session
) -> None:
    agent = await register_and_login(http, prefix="agent")
    await make_role(settings, agent.user_id, "agent")
    watcher = await connect(agent)
    reply = await watcher.request("dashboard.subscribe")
    assert reply["interval"] == 1.0
    assert reply["nodes"] == [reply["node"]]

    first = await _stats(watcher)
    assert first["node"] == reply["node"]
    assert first["connections"] == 1
    assert first["rooms"] == 0

    talker = await connect(customer)
    room = (await talker.request("room.create", name="counted"))["id"]
    await talker.request("room.join", room=room)
    for index in range(5):
        await talker.send_message(room, f"m{index}")
    later = await _stats(watcher)
    while later["messages_total"] < first["messages_total"] + 5:
        later = await _stats(watcher)
    assert later["connections"] == 2
    assert later["rooms"] == 1
    assert later["messages_per_second"] > 0
    assert later["slow_consumer_closes"] == 0

    assert (await watcher.request("dashboard.unsubscribe")) == {"subscribed": False}
    watcher.pending_events()
    with pytest.raises(TimeoutError):
        await _stats(watcher, seconds=2.5)


async def test_domain_panels_ride_along_and_a_broken_one_is_left_out(
    connect: Connect, admin: Session, server: RunningServer
) -> None:
    hub = server.app.state.papo.realtime.hub
    hub.dashboard.add_panel("tickets", lambda: {"open": 3.0, "breaching_sla": 1.0})

    def broken() -> dict[str, float]:
        raise RuntimeError("the tickets store is down")

    hub.dashboard.add_panel("orders", broken)
    watcher = await connect(admin)
    await watcher.request("dashboard.subscribe")
    stats = await _stats(watcher)
    assert stats["panels"] == {"tickets": {"open": 3.0, "breaching_sla": 1.0}}


async def test_the_pages_are_served_with_a_strict_content_security_policy(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/", "/dashboard"):
        page = await http.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
    script = await http.get("/static/papo.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
