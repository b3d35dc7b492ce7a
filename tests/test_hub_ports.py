"""One contract suite per port, run against every adapter (memory and real service)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from pymongo import AsyncMongoClient

from papo.hub.broker_memory import MemoryBroker
from papo.hub.history import Draft, History
from papo.hub.history_memory import MemoryHistory
from papo.hub.presence_memory import MemoryPresence
from papo.hub.rooms import Room, RoomStore
from papo.hub.rooms_memory import MemoryRoomStore
from papo.persistence.history_mongo import MongoHistory
from papo.persistence.rooms_postgres import PostgresRoomStore
from papo.protocol.frames import UserRef
from papo.server.config import Settings


@pytest.fixture(params=["memory", "mongo"])
async def history(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[History]:
    if request.param == "memory":
        yield MemoryHistory()
        return
    assert base_settings.urls.mongo
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(base_settings.urls.mongo)
    adapter = MongoHistory(client, f"contract_{secrets.token_hex(4)}")
    await adapter.prepare()
    yield adapter
    await client.close()


def _drafts(room: str, *ids: str, sender: str = "u1") -> list[Draft]:
    return [Draft(room, sender, "U", f"text {i}", i) for i in ids]


async def test_history_sequences_grow_without_gaps(history: History) -> None:
    first = await history.append("r", _drafts("r", "a", "b"))
    second = await history.append("r", _drafts("r", "c"))
    assert [m.seq for m in first + second] == [1, 2, 3]
    assert all(not m.duplicate for m in first + second)
    other = await history.append("other", _drafts("other", "a"))
    assert other[0].seq == 1, "each room counts on its own"
    assert await history.last_seqs(["r", "other", "empty"]) == {"r": 3, "other": 1, "empty": 0}


async def test_history_is_idempotent_by_sender_and_client_id(history: History) -> None:
    await history.append("r", _drafts("r", "a", "b"))
    again = await history.append("r", [*_drafts("r", "b"), *_drafts("r", "c"), *_drafts("r", "c")])
    assert [(m.seq, m.duplicate) for m in again] == [(2, True), (3, False), (3, True)]
    other_sender = await history.append("r", _drafts("r", "a", sender="u2"))
    assert other_sender[0].seq == 4, "client ids are per sender"
    assert [m.seq for m in await history.after("r", 0, 100)] == [1, 2, 3, 4]


async def test_history_reads_in_order(history: History) -> None:
    await history.append("r", _drafts("r", *(str(i) for i in range(10))))
    assert [m.seq for m in await history.after("r", 7, 100)] == [8, 9, 10]
    assert [m.seq for m in await history.after("r", 2, 3)] == [3, 4, 5]
    assert [m.seq for m in await history.before("r", None, 3)] == [8, 9, 10]
    assert [m.seq for m in await history.before("r", 4, 10)] == [1, 2, 3]
    assert await history.before("r", 1, 10) == []


async def test_history_edits_and_deletes_only_own(history: History) -> None:
    (message,) = await history.append("r", _drafts("r", "a"))
    assert await history.edit("r", message.seq, "intruder", "x") is None
    edited = await history.edit("r", message.seq, "u1", "fixed")
    assert edited is not None
    assert (edited.text, edited.edited) == ("fixed", True)
    deleted = await history.delete("r", message.seq, "u1")
    assert deleted is not None
    assert (deleted.text, deleted.deleted) == ("", True)
    assert await history.edit("r", message.seq, "u1", "again") is None
    assert await history.delete("r", 99, "u1") is None


async def test_history_concurrent_batches_stay_gapless(history: History) -> None:
    batches = [_drafts("busy", *(f"{b}-{i}" for i in range(10))) for b in range(10)]
    results = await asyncio.gather(*(history.append("busy", batch) for batch in batches))
    seqs = sorted(m.seq for batch in results for m in batch)
    assert seqs == list(range(1, 101))


@pytest.fixture(params=["memory", "postgres"])
async def rooms(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[RoomStore]:
    if request.param == "memory":
        yield MemoryRoomStore()
        return
    assert base_settings.urls.database
    pool = await asyncpg.create_pool(base_settings.urls.database, min_size=0, max_size=4)
    yield PostgresRoomStore(pool)
    await pool.close()


def _room(kind: str = "public") -> Room:
    return Room(
        id=f"r_{secrets.token_hex(6)}",
        kind=kind,
        name="n",
        topic="t",  # type: ignore[arg-type]
        created_by="u1",
        created_at=datetime.now(UTC),
    )


async def test_rooms_membership_reports_changes_once(rooms: RoomStore) -> None:
    ana, bia = UserRef(id="ana", name="Ana"), UserRef(id="bia", name="Bia")
    room = await rooms.create(_room(), [ana])
    assert await rooms.create(room, [bia]) == room, "creating twice returns the first"
    assert await rooms.get(room.id) == room
    assert await rooms.is_member(room.id, "ana")
    assert not await rooms.is_member(room.id, "bia")
    assert await rooms.add_member(room.id, bia) is True
    assert await rooms.add_member(room.id, bia) is False
    assert {u.id for u in await rooms.members(room.id)} == {"ana", "bia"}
    assert await rooms.member_counts([room.id]) == {room.id: 2}
    assert await rooms.remove_member(room.id, "bia") is True
    assert await rooms.remove_member(room.id, "bia") is False
    assert await rooms.get("r_missing") is None


async def test_rooms_list_and_read_markers(rooms: RoomStore) -> None:
    me = UserRef(id=f"u_{secrets.token_hex(4)}", name="Me")
    mine = sorted([(await rooms.create(_room(), [me])).id for _ in range(3)])
    secret = await rooms.create(_room("private"), [me])
    page = await rooms.rooms_of(me.id, 2, None)
    assert [r.id for r in page] == sorted([*mine, secret.id])[:2]
    rest = await rooms.rooms_of(me.id, 10, page[-1].id)
    assert len(page) + len(rest) == 4
    public = [r.id for r in await rooms.public_rooms(1000, None)]
    assert set(mine) <= set(public)
    assert secret.id not in public
    await rooms.set_read(mine[0], me.id, 5)
    await rooms.set_read(mine[0], me.id, 3)
    assert await rooms.read_markers(me.id, [mine[0], mine[1]]) == {mine[0]: 5, mine[1]: 0}


async def test_memory_presence_reports_edges() -> None:
    presence = MemoryPresence()
    ana = UserRef(id="ana", name="Ana")
    assert await presence.add("r", ana, "c1") is True
    assert await presence.add("r", ana, "c2") is False
    assert await presence.online("r") == [ana]
    assert await presence.remove("r", "ana", "c1") is False
    assert await presence.remove("r", "ana", "c2") is True
    assert await presence.remove("r", "ana", "c2") is False
    assert await presence.online("r") == []
    assert await presence.connect("ana", "c1") is True
    assert await presence.connect("ana", "c2") is False
    assert await presence.is_online("ana")
    assert await presence.disconnect("ana", "c1") is False
    assert await presence.disconnect("ana", "c2") is True
    assert not await presence.is_online("ana")


async def test_memory_broker_delivers_to_subscribed_channels_only() -> None:
    broker = MemoryBroker()
    got: list[tuple[str, bytes]] = []
    await broker.start(lambda channel, payload: got.append((channel, payload)))
    await broker.subscribe("a")
    await broker.publish("a", b"1")
    await broker.publish("b", b"2")
    await broker.unsubscribe("a")
    await broker.publish("a", b"3")
    assert got == [("a", b"1")]
    await broker.stop()
