"""Three real ``papo serve`` nodes on one Redis and one MongoDB-wire server.

What users of a multi-node papo notice: everything crosses nodes; a node that dies
takes no acknowledged message with it and its clients carry on elsewhere; a Redis
outage refuses sends instead of losing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from papo.client import PapoClient, PapoClientError
from papo.server.config import Settings
from tests.cluster import Cluster, Node
from tests.conftest import TEST_JWT_SECRET, Session, make_role, register_and_login

pytestmark = pytest.mark.timeout(240)


@contextlib.asynccontextmanager
async def _running(
    base_settings: Settings, nodes: int, env: dict[str, str] | None = None
) -> AsyncIterator[Cluster]:
    """``nodes`` nodes on a Redis of their own, with ``env`` added to each node's."""
    work_dir = Path(tempfile.mkdtemp(prefix="papo-cluster-"))
    running = Cluster(base_settings, TEST_JWT_SECRET, work_dir, env=env or {})
    try:
        running.start_redis()
        await running.start_nodes(nodes)
        yield running
    finally:
        running.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture
async def cluster(base_settings: Settings) -> AsyncIterator[Cluster]:
    async with _running(base_settings, 3) as running:
        yield running


def _figures(scenario: str, **figures: object) -> None:
    """Printed for docs/scaling.md (visible with ``pytest -s``)."""
    print(f"\n[scale-out figures] {scenario}: {figures}")


async def _users(node: Node, count: int, prefix: str) -> list[Session]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        return [await register_and_login(http, prefix=f"{prefix}{i}") for i in range(count)]


async def _client(node: Node, user: Session, *others: Node, **options: Any) -> PapoClient:
    return await PapoClient.connect(
        node.ws_url, user.access_token, alternates=[o.ws_url for o in others], **options
    )


async def _next_of(client: PapoClient, kind: str, seconds: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        event = await client.next_event(max(0.01, deadline - time.monotonic()))
        if event["type"] == kind:
            return event


async def _joined(client: PapoClient, user_id: str) -> None:
    while user_id not in {u["id"] for u in (await _next_of(client, "presence"))["joined"]}:
        pass


async def test_a_rooms_first_messages_cross_nodes_without_waiting_out_reordering(
    base_settings: Settings,
) -> None:
    """A node holds a message that arrives past a gap for the reorder wait (messages of
    two nodes crossing in Redis). The first message of a room its members just joined
    is not held so: each member's join said which messages it needs."""
    slow_reorder = {"PAPO_REORDER_WAIT_SECONDS": "3"}
    async with _running(base_settings, 2, slow_reorder) as cluster:
        ana_user, bob_user = await _users(cluster.nodes[0], 2, "first")
        ana = await _client(cluster.nodes[0], ana_user)
        bob = await _client(cluster.nodes[1], bob_user)
        try:
            room = (await ana.request("room.create", name="fresh"))["id"]
            await ana.request("room.join", room=room)
            await bob.request("room.join", room=room)
            await _joined(ana, bob.user_id)
            started = time.monotonic()
            acks = [await ana.send_message(room, f"m{n}") for n in range(3)]
            seen = {}
            for reader in (ana, bob):  # ana on the sender's node, bob on the other
                seen[reader.user_id] = [(await _next_of(reader, "message"))["seq"] for _ in acks]
            elapsed = time.monotonic() - started
        finally:
            await ana.close()
            await bob.close()
    assert seen == {ana.user_id: [1, 2, 3], bob.user_id: [1, 2, 3]}
    assert [ack["seq"] for ack in acks] == [1, 2, 3]
    assert elapsed < 1.5, f"{elapsed:.2f} s: the first message waited out the reorder window"


async def test_messages_dms_presence_and_typing_cross_nodes(cluster: Cluster) -> None:
    ana_user, bob_user, cat_user = await _users(cluster.nodes[0], 3, "cross")
    ana = await _client(cluster.nodes[0], ana_user)
    bob = await _client(cluster.nodes[1], bob_user)
    cat = await _client(cluster.nodes[2], cat_user)
    try:
        room = (await ana.request("room.create", name="across"))["id"]
        await ana.request("room.join", room=room)
        await bob.request("room.join", room=room)
        await _joined(ana, bob.user_id)  # bob (node 1) seen on node 0
        await cat.request("room.join", room=room)
        await _joined(ana, cat.user_id)
        online = await bob.request("presence", room=room)
        assert {u["id"] for u in online["online"]} == {ana.user_id, bob.user_id, cat.user_id}

        await bob.request("typing", room=room, active=True)
        for watcher in (ana, cat):
            typing = await _next_of(watcher, "typing")
            assert (typing["user"]["id"], typing["active"]) == (bob.user_id, True)

        ack = await ana.send_message(room, "hello from node 0")
        for reader in (bob, cat):
            message = await _next_of(reader, "message")
            assert (message["seq"], message["text"]) == (ack["seq"], "hello from node 0")

        dm = await cat.request("dm.open", user=ana.user_id)
        dm_ack = await cat.send_message(dm["id"], "psst, from node 2")
        received = await _next_of(ana, "message")
        while received["room"] != dm["id"]:  # skip ana's own copy of her room message
            received = await _next_of(ana, "message")
        assert (received["room"], received["seq"], received["text"]) == (
            dm["id"],
            dm_ack["seq"],
            "psst, from node 2",
        )
        assert (await bob.request("presence.user", user=cat.user_id))["online"] is True
    finally:
        for client in (ana, bob, cat):
            await client.close()


async def test_a_leave_on_one_node_stops_the_room_on_the_users_other_nodes(
    cluster: Cluster,
) -> None:
    ana_user, bob_user = await _users(cluster.nodes[0], 2, "leaver")
    ana = await _client(cluster.nodes[0], ana_user)
    bob_phone = await _client(cluster.nodes[1], bob_user)
    bob_laptop = await _client(cluster.nodes[2], bob_user)
    try:
        room = (await ana.request("room.create", name="leaving"))["id"]
        for client in (ana, bob_phone, bob_laptop):
            await client.request("room.join", room=room)
        await bob_phone.request("room.leave", room=room)
        assert (await _next_of(bob_laptop, "room.left"))["room"] == room
        await ana.send_message(room, "after bob left")
        assert (await _next_of(ana, "message"))["text"] == "after bob left"
        await asyncio.sleep(0.3)
        assert not [e for e in bob_laptop.pending_events() if e["type"] == "message"]
        with pytest.raises(PapoClientError) as gone:
            await bob_laptop.request("message.send", room=room, text="hi?", client_id="x")
        assert gone.value.code == "not_a_member"
    finally:
        for client in (ana, bob_phone, bob_laptop):
            await client.close()


async def test_a_dashboard_on_one_node_sees_every_node(
    cluster: Cluster, base_settings: Settings
) -> None:
    boss_user, *others = await _users(cluster.nodes[0], 3, "watch")
    await make_role(base_settings, boss_user.user_id, "admin")
    boss = await _client(cluster.nodes[0], boss_user)
    visitors = [
        await _client(node, user) for node, user in zip(cluster.nodes[1:], others, strict=True)
    ]
    try:
        reply = await boss.request("dashboard.subscribe")
        assert set(reply["nodes"]) == {"node-0", "node-1", "node-2"}
        latest: dict[str, dict[str, Any]] = {}
        while len(latest) < 3:
            stats = await _next_of(boss, "dashboard.stats", 10)
            latest[stats["node"]] = stats
        assert {node: stats["connections"] for node, stats in latest.items()} == {
            "node-0": 1,
            "node-1": 1,
            "node-2": 1,
        }
    finally:
        for client in (boss, *visitors):
            await client.close()


async def _stream(
    client: PapoClient, room: str, label: str, count: int, acks: dict[str, int]
) -> None:
    """Send ``count`` messages one after another; each returns once acknowledged."""
    for index in range(count):
        text = f"{label}-{index}"
        ack = await asyncio.wait_for(client.send_message(room, text), 60)
        acks[text] = ack["seq"]
        await asyncio.sleep(0.01)


async def _collect_until(
    client: PapoClient, expected: set[str], seconds: float
) -> tuple[list[int], list[str]]:
    """Message events (seq, text) from ``client`` until every expected text arrived."""
    seqs: list[int] = []
    texts: list[str] = []
    deadline = time.monotonic() + seconds
    while not expected <= set(texts):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"missing {sorted(expected - set(texts))[:10]}"
        try:
            event = await client.next_event(remaining)
        except TimeoutError:
            continue
        if event["type"] == "message":
            seqs.append(event["seq"])
            texts.append(event["text"])
    return seqs, texts


def _assert_exactly_once_in_order(seqs: list[int], texts: list[str], acks: dict[str, int]) -> None:
    assert len(texts) == len(set(texts)), "a message arrived twice"
    assert seqs == sorted(seqs), "messages arrived out of order"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap in the sequence"
    by_text = dict(zip(texts, seqs, strict=True))
    assert all(by_text[text] == seq for text, seq in acks.items()), "acked seq != delivered seq"


async def _history(client: PapoClient, room: str) -> list[tuple[int, str]]:
    """Every stored message of ``room`` as (seq, text), paging backwards."""
    messages: list[tuple[int, str]] = []
    before = None
    while True:
        page = await client.request("history", room=room, limit=200, before=before)
        messages[:0] = [(m["seq"], m["text"]) for m in page["messages"]]
        if not page["has_more"]:
            return messages
        before = page["messages"][0]["seq"]


async def test_a_killed_node_loses_no_acked_message(cluster: Cluster) -> None:
    """Steady senders on every node; ``kill -9`` one node; every client carries on."""
    node0, _, node2 = cluster.nodes
    users = await _users(node0, 7, "crash")
    senders = [
        await _client(node, user, *(n for n in cluster.nodes if n is not node))
        for node, user in zip(cluster.nodes, users[:3], strict=True)
    ]
    readers = [
        await _client(node, user, *(n for n in cluster.nodes if n is not node and n is not node2))
        for node, user in zip(cluster.nodes, users[3:6], strict=True)
    ]
    # A user whose only device was on the dying node and who does not come back.
    gone = await _client(node2, users[6], reconnect=False)
    everyone = [*senders, *readers, gone]
    try:
        room = (await senders[0].request("room.create", name="steady"))["id"]
        for client in everyone:
            await client.request("room.join", room=room)
        watcher = readers[0]
        watcher.pending_events()

        acks: dict[str, int] = {}
        streams = [
            asyncio.create_task(_stream(sender, room, f"s{i}", 60, acks))
            for i, sender in enumerate(senders)
        ]
        while len(acks) < 45:  # noqa: ASYNC110 - polling the senders' progress
            await asyncio.sleep(0.02)
        node2.kill()
        killed_at = time.monotonic()
        await asyncio.gather(*streams)
        assert len(acks) == 180

        senders_done = time.monotonic() - killed_at
        for reader in readers:
            seqs, texts = await _collect_until(reader, set(acks), 60)
            _assert_exactly_once_in_order(seqs, texts, acks)
            assert reader.duplicates_dropped == 0
        readers_done = time.monotonic() - killed_at
        assert readers[2].reconnects >= 1
        assert readers[2].current_url != node2.ws_url
        assert senders[2].reconnects >= 1

        # The user who did not come back leaves presence within the bound (10 s).
        while True:
            online = await watcher.request("presence", room=room)
            if gone.user_id not in {u["id"] for u in online["online"]}:
                break
            assert time.monotonic() - killed_at < 10, "crashed node's user still online"
            await asyncio.sleep(0.2)
        _figures(
            "kill -9",
            acked=len(acks),
            senders_finished_after_kill_s=round(senders_done, 2),
            readers_complete_after_kill_s=round(readers_done, 2),
            presence_dropped_after_s=round(time.monotonic() - killed_at, 2),
        )
        still = {u["id"] for u in online["online"]}
        assert {c.user_id for c in (*senders, *readers)} <= still, "reconnected users stay"

        # History holds each acked message once, with the acked number.
        stored = await _history(watcher, room)
        assert sorted(stored) == sorted((seq, text) for text, seq in acks.items())
    finally:
        for client in everyone:
            await client.close()


async def test_a_redis_outage_refuses_sends_and_loses_nothing_acked(cluster: Cluster) -> None:
    """Redis stops for 5 s under traffic: every send is acked or refused with an error,
    never left hanging; nothing acked is lost; nodes come back by themselves."""
    node0, node1, _ = cluster.nodes
    sender_user, reader_user = await _users(node0, 2, "outage")
    sender = await _client(node0, sender_user)
    reader = await _client(node1, reader_user)
    try:
        room = (await sender.request("room.create", name="outage"))["id"]
        await sender.request("room.join", room=room)
        await reader.request("room.join", room=room)
        acked: dict[str, int] = {}
        refused: list[str] = []
        codes: set[str] = set()
        counter = itertools.count()
        stop_at: list[float] = []

        async def traffic() -> None:
            while not stop_at or time.monotonic() < stop_at[0]:
                text = f"m-{next(counter)}"
                try:
                    # Each send must be answered (ack or error) well within the timeout.
                    ack = await asyncio.wait_for(
                        sender.request("message.send", room=room, text=text, client_id=text), 10
                    )
                    acked[text] = ack["seq"]
                except PapoClientError as error:
                    refused.append(text)
                    codes.add(error.code)
                await asyncio.sleep(0.02)

        running = asyncio.create_task(traffic())
        await asyncio.sleep(1)
        cluster.stop_redis()
        async with httpx.AsyncClient(base_url=node0.url, timeout=10) as http:
            await asyncio.sleep(1)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["failing"] == ["redis"]
            await asyncio.sleep(4)
            cluster.start_redis()
            stop_at.append(time.monotonic() + 4)
            await running
            metrics = (await http.get("/metrics")).text
            assert (await http.get("/readyz")).status_code == 200

        _figures("redis outage 5 s", acked=len(acked), refused=len(refused))
        assert refused, "sends during the outage were refused"
        assert codes == {"unavailable"}
        assert len(acked) > 50, "traffic flowed before and after the outage"
        reconnects = [
            line for line in metrics.splitlines() if line.startswith("papo_broker_reconnects_total")
        ]
        assert float(reconnects[0].split()[-1]) >= 1

        seqs, texts = await _collect_until(reader, set(acked), 30)
        assert len(texts) == len(set(texts)), "a message arrived twice"
        assert seqs == sorted(seqs)
        assert reader.duplicates_dropped == 0
        # Refused messages retried with the same client_id are stored at most once.
        for text in refused[:5]:
            retry = await sender.send_message(room, text, client_id=text)
            assert retry["seq"] > 0
        stored = [text for _, text in await _history(reader, room)]
        assert len(stored) == len(set(stored))
        assert set(acked) <= set(stored)
    finally:
        await sender.close()
        await reader.close()
