"""Rooms, DMs, messages, history, presence and typing, over real WebSocket clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from papo.client import PapoClient, PapoClientError
from papo.server.config import Settings
from tests.conftest import Session, metric, register_and_login


@pytest.fixture
def settings(both_shapes: Settings) -> Settings:
    """Every test here runs on a node sharing Redis and on a lone node."""
    return both_shapes


Connect = Callable[..., Awaitable[PapoClient]]


async def _events_until(client: PapoClient, kind: str, **match: Any) -> dict[str, Any]:
    while True:
        event = await client.next_event(5)
        if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event


async def _room_with(connect: Connect, *sessions: Session) -> tuple[str, list[PapoClient]]:
    clients = [await connect(session) for session in sessions]
    room = await clients[0].request("room.create", name="general", topic="all of us")
    for client in clients:
        await client.request("room.join", room=room["id"])
    return room["id"], clients


async def test_welcome_names_the_session_user_and_limits(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    session = await register_and_login(http)
    client = await connect(session)
    assert client.welcome["user"]["id"] == session.user_id
    assert client.welcome["role"] == "customer"
    assert client.welcome["session"].startswith("conn_")
    assert client.welcome["limits"]["max_message_length"] > 0
    assert client.welcome["expires_at"] > 0
    pong = await client.request("ping")
    assert pong["ts"] > 0


async def test_100_concurrent_senders_get_unique_gapless_sequences(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    sessions = [await register_and_login(http, prefix=f"s{i}") for i in range(10)]
    room, clients = await _room_with(connect, *sessions)

    async def sender(index: int) -> dict[str, Any]:
        client = clients[index % len(clients)]
        return await client.send_message(room, f"message {index}")

    acks = await asyncio.gather(*(sender(i) for i in range(100)))
    seqs = sorted(ack["seq"] for ack in acks)
    assert seqs == list(range(1, 101))
    history = await clients[0].request("history", room=room, limit=200)
    assert [m["seq"] for m in history["messages"]] == list(range(1, 101))
    assert {m["text"] for m in history["messages"]} == {f"message {i}" for i in range(100)}


async def test_a_retried_send_is_acked_again_and_stored_once(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    room, (client,) = await _room_with(connect, await register_and_login(http))
    first = await client.request("message.send", room=room, text="once", client_id="c-1")
    again = await client.request("message.send", room=room, text="once", client_id="c-1")
    assert first["seq"] == again["seq"]
    assert first["duplicate"] is False
    assert again["duplicate"] is True
    history = await client.request("history", room=room)
    assert [m["text"] for m in history["messages"]] == ["once"]


async def test_messages_reach_every_member_with_sender_and_sequence(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, b) = await _room_with(connect, alice, bob)
    ack = await a.send_message(room, "hi bob")
    event = await _events_until(b, "message", room=room)
    assert event["seq"] == ack["seq"]
    assert event["text"] == "hi bob"
    assert event["sender"] == {"id": alice.user_id, "name": "Alice"}
    assert "id" not in event, "server events never carry a request id"


async def test_edit_and_delete_own_messages_only(http: httpx.AsyncClient, connect: Connect) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, b) = await _room_with(connect, alice, bob)
    ack = await a.send_message(room, "tpyo")
    await a.request("message.edit", room=room, seq=ack["seq"], text="typo")
    edited = await _events_until(b, "message.edited", room=room)
    assert edited["text"] == "typo"
    with pytest.raises(PapoClientError) as not_theirs:
        await b.request("message.edit", room=room, seq=ack["seq"], text="hacked")
    assert not_theirs.value.code == "not_found"
    await a.request("message.delete", room=room, seq=ack["seq"])
    deleted = await _events_until(b, "message.deleted", room=room)
    assert deleted["seq"] == ack["seq"]
    history = await b.request("history", room=room)
    assert history["messages"][0]["deleted"] is True
    assert history["messages"][0]["text"] == ""


async def _last_seq_reads(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    return metric(text, "papo_history_reads_total", read="last_seq")


async def test_history_on_join_and_backwards_pagination(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    owner = await register_and_login(http)
    room, (client,) = await _room_with(connect, owner)
    for i in range(30):
        await client.send_message(room, f"m{i}")
    late = await connect(await register_and_login(http, prefix="late"))
    lookups_before = await _last_seq_reads(http)
    joined = await late.request("room.join", room=room, history=10)
    assert [m["seq"] for m in joined["history"]] == list(range(21, 31))
    assert joined["room"]["last_seq"] == 30
    assert await _last_seq_reads(http) == lookups_before, "the page ended at the last sequence"
    older = await late.request("history", room=room, before=21, limit=15)
    assert [m["seq"] for m in older["messages"]] == list(range(6, 21))
    assert older["has_more"] is True
    oldest = await late.request("history", room=room, before=6, limit=15)
    assert [m["seq"] for m in oldest["messages"]] == [1, 2, 3, 4, 5]
    assert oldest["has_more"] is False


async def test_read_markers_drive_unread_counts(http: httpx.AsyncClient, connect: Connect) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, b) = await _room_with(connect, alice, bob)
    for i in range(5):
        await a.send_message(room, f"m{i}")
    mine = await b.request("room.list")
    entry = next(item for item in mine["items"] if item["id"] == room)
    assert entry["unread"] == 5
    assert entry["last_seq"] == 5
    await b.request("read", room=room, seq=3)
    mine = await b.request("room.list")
    assert next(item for item in mine["items"] if item["id"] == room)["unread"] == 2


async def test_private_rooms_need_an_invite(http: httpx.AsyncClient, connect: Connect) -> None:
    owner, guest = (
        await register_and_login(http, prefix="owner"),
        await register_and_login(http, prefix="guest"),
    )
    o, g = await connect(owner), await connect(guest)
    room = await o.request("room.create", name="secret", visibility="private")
    with pytest.raises(PapoClientError) as refused:
        await g.request("room.join", room=room["id"])
    assert refused.value.code == "not_a_member"
    public = await g.request("room.list", scope="public")
    assert room["id"] not in {item["id"] for item in public["items"]}
    await o.request("room.invite", room=room["id"], user=guest.user_id)
    invited = await _events_until(g, "room.invited")
    assert invited["room"]["id"] == room["id"]
    assert invited["by"]["id"] == owner.user_id
    joined = await g.request("room.join", room=room["id"])
    assert joined["room"]["kind"] == "private"
    members = await g.request("room.members", room=room["id"])
    assert {m["id"] for m in members["members"]} == {owner.user_id, guest.user_id}


async def test_leave_ends_membership_and_presence(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, b) = await _room_with(connect, alice, bob)
    await b.request("room.leave", room=room)
    await _events_until(a, "presence", room=room, left=[{"id": bob.user_id, "name": "Bob"}])
    with pytest.raises(PapoClientError) as gone:
        await b.send_message(room, "still here?")
    assert gone.value.code == "not_a_member"


async def test_frames_sent_together_are_handled_in_the_order_sent(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    """A member's sends are handled as they are read, unless a frame before them is
    still being handled: a send right behind a leave is refused, one right behind a
    join goes through, and a sender's messages keep their order."""
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, b) = await _room_with(connect, alice, bob)
    await b.send_message(room, "before")  # Bob's membership is remembered from here
    outcomes: tuple[Any, ...] = await asyncio.gather(
        b.request("room.leave", room=room),
        b.request("message.send", room=room, text="after leaving", client_id="gone"),
        return_exceptions=True,
    )
    left, refused = outcomes
    assert left == {"room": room, "left": True}
    assert isinstance(refused, PapoClientError)
    assert refused.code == "not_a_member"
    joined, sent = await asyncio.gather(
        b.request("room.join", room=room),
        b.request("message.send", room=room, text="back", client_id="back"),
    )
    assert joined["room"]["id"] == room
    assert sent["seq"] == 2
    acks = await asyncio.gather(*(b.send_message(room, f"m{n}") for n in range(20)))
    assert [ack["seq"] for ack in acks] == list(range(3, 23))
    texts: list[str] = []
    while len(texts) < 22:
        event = await _events_until(a, "message", room=room)
        texts.append(event["text"])
    assert texts == ["before", "back"] + [f"m{n}" for n in range(20)]


async def test_leaving_on_one_device_stops_the_room_on_every_device(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    room, (a, bob_phone) = await _room_with(connect, alice, bob)
    bob_laptop = await connect(bob)
    await bob_laptop.request("room.join", room=room)
    await bob_phone.request("room.leave", room=room)
    for device in (bob_phone, bob_laptop):
        assert (await _events_until(device, "room.left"))["room"] == room
    bob_laptop.pending_events()
    # Bob is gone from the room everywhere: its messages no longer reach the laptop, and
    # the laptop can no longer send there.
    await a.send_message(room, "bob has gone")
    await _events_until(a, "message", room=room, text="bob has gone")
    assert not [e for e in bob_laptop.pending_events() if e["type"] == "message"]
    with pytest.raises(PapoClientError) as gone:
        await bob_laptop.request("message.send", room=room, text="hello?", client_id="late")
    assert gone.value.code == "not_a_member"
    online = await a.request("presence", room=room)
    assert bob.user_id not in {user["id"] for user in online["online"]}


async def test_a_dm_reaches_every_device_of_both_users(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    a = await connect(alice)
    bob_phone, bob_laptop = await connect(bob), await connect(bob)
    dm = await a.request("dm.open", user=bob.user_id)
    assert dm["kind"] == "dm"
    again = await bob_phone.request("dm.open", user=alice.user_id)
    assert again["id"] == dm["id"], "one conversation per pair, whoever opens it"
    ack = await a.send_message(dm["id"], "psst")
    for device in (bob_phone, bob_laptop):
        event = await _events_until(device, "message", room=dm["id"])
        assert event["text"] == "psst"
        assert event["seq"] == ack["seq"]
    echo = await _events_until(a, "message", room=dm["id"])
    assert echo["seq"] == ack["seq"], "the sender's other devices see it too"
    stranger = await connect(await register_and_login(http, prefix="eve"))
    with pytest.raises(PapoClientError) as refused:
        await stranger.request("history", room=dm["id"])
    assert refused.value.code == "not_a_member"


async def test_dm_with_unknown_user_or_self_is_refused(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    session = await register_and_login(http)
    client = await connect(session)
    with pytest.raises(PapoClientError) as unknown:
        await client.request("dm.open", user=str(uuid.uuid4()))
    assert unknown.value.code == "not_found"
    with pytest.raises(PapoClientError) as me:
        await client.request("dm.open", user=session.user_id)
    assert me.value.field == "user"


async def test_presence_and_typing_reach_the_room_and_stop_when_the_peer_leaves(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    a = await connect(alice)
    room = (await a.request("room.create", name="lobby"))["id"]
    await a.request("room.join", room=room)
    b = await connect(bob)
    joined = await b.request("room.join", room=room)
    assert {u["id"] for u in joined["online"]} == {alice.user_id, bob.user_id}
    bob_ref = {"id": bob.user_id, "name": "Bob"}
    came = await _events_until(a, "presence", room=room, joined=[bob_ref])
    assert came["left"] == []
    online = await a.request("presence", room=room)
    assert {u["id"] for u in online["online"]} == {alice.user_id, bob.user_id}

    await b.request("typing", room=room, active=True)
    typing = await _events_until(a, "typing", room=room)
    assert typing["user"]["id"] == bob.user_id
    assert typing["active"] is True
    with pytest.raises(PapoClientError) as limited:
        await b.request("typing", room=room, active=True)
    assert limited.value.code == "rate_limited"

    assert (await a.request("presence.user", user=bob.user_id))["online"] is True
    await b.close()  # bob vanishes while typing
    stopped = await _events_until(a, "typing", room=room)
    assert stopped["active"] is False
    assert stopped["user"] == bob_ref
    left = await _events_until(a, "presence", room=room, left=[bob_ref])
    assert left["joined"] == []
    assert (await a.request("presence.user", user=bob.user_id))["online"] is False
    history = await a.request("history", room=room)
    assert history["messages"] == [], "typing is never stored"


async def test_whoever_sees_someone_leave_hears_they_are_offline(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    """Bob is in many rooms when he disconnects: the first "left" Alice sees may come
    while papo is still taking him out of the others, and asking right then whether he
    is online must already say no."""
    alice, bob = (
        await register_and_login(http, prefix="alice"),
        await register_and_login(http, prefix="bob"),
    )
    a, b = await connect(alice), await connect(bob)
    rooms = [(await a.request("room.create", name=f"r{n}"))["id"] for n in range(20)]
    for room in rooms:
        await a.request("room.join", room=room)
        await b.request("room.join", room=room)
    a.pending_events()
    await b.close()
    bob_ref = {"id": bob.user_id, "name": "Bob"}
    first_left = await _events_until(a, "presence", left=[bob_ref])
    assert first_left["room"] in rooms
    assert (await a.request("presence.user", user=bob.user_id))["online"] is False


async def test_room_lists_paginate(http: httpx.AsyncClient, connect: Connect) -> None:
    client = await connect(await register_and_login(http))
    made = {(await client.request("room.create", name=f"r{i}"))["id"] for i in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        page = await client.request("room.list", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert made <= set(seen)
    assert len(seen) == len(set(seen))


async def test_metrics_count_connections_frames_errors_and_batches(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    client = await connect(await register_and_login(http))
    room = (await client.request("room.create", name="counted"))["id"]
    await client.request("room.join", room=room)
    await client.send_message(room, "one")
    while (await client.next_event())["type"] != "message":
        pass  # its live copy went out (through the broker) and was counted
    with pytest.raises(PapoClientError):
        await client.request("room.join", room="r_nope")
    text = (await http.get("/metrics")).text
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("papo_")
    }
    assert lines["papo_ws_connections"] >= 1
    assert lines['papo_ws_frames_in_total{type="message.send"}'] >= 1
    assert lines['papo_ws_errors_total{code="not_found"}'] >= 1
    assert lines["papo_history_write_batch_size_count"] >= 1
    assert lines["papo_history_write_seconds_count"] == lines["papo_history_write_batch_size_count"]
    assert lines["papo_fanout_deliveries_total"] >= 1
    assert lines["papo_messages_stored_total"] >= 1
    assert "papo_fanout_seconds_bucket" in text
