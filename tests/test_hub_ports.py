"""One contract suite per port, run against every adapter (memory and real service)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from papo.hub.broker import Broker, BrokerError
from papo.hub.broker_memory import MemoryBroker
from papo.hub.history import Draft, History, Stored
from papo.hub.history_memory import MemoryHistory
from papo.hub.history_reads import SharedReads
from papo.hub.metrics import HubMetrics
from papo.hub.presence import Presence
from papo.hub.presence_memory import MemoryPresence
from papo.hub.rooms import Room, RoomKind, RoomStore
from papo.hub.rooms_cache import CachedRoomStore
from papo.hub.rooms_memory import MemoryRoomStore
from papo.persistence.broker_redis import RedisBroker
from papo.persistence.history_mongo import MongoHistory
from papo.persistence.presence_redis import ENTRIES, RedisPresence, room_key
from papo.persistence.redis import connect_redis
from papo.persistence.rooms_postgres import PostgresRoomStore
from papo.protocol.frames import UserRef
from papo.server.config import Settings
from papo.server.embedded.process import ManagedProcess, free_port, wait_for_port
from tests.cluster import throwaway_redis_argv


@pytest.fixture(params=["memory", "mongo", "mongo-shared-reads"])
async def history(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[History]:
    if request.param == "memory":
        yield MemoryHistory()
        return
    assert base_settings.urls.mongo
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(base_settings.urls.mongo)
    adapter: History = MongoHistory(client, f"contract_{secrets.token_hex(4)}")
    if request.param == "mongo-shared-reads":  # what the hub actually reads through
        adapter = SharedReads(adapter, HubMetrics(CollectorRegistry()))
    await adapter.prepare()
    yield adapter
    await client.close()


def _drafts(room: str, *ids: str, sender: str = "u1") -> list[Draft]:
    return [Draft(room, sender, "U", f"text {i}", i) for i in ids]


async def test_history_sequences_grow_without_gaps(history: History) -> None:
    first = await history.append(_drafts("r", "a", "b"))
    second = await history.append(_drafts("r", "c"))
    assert [m.seq for m in first + second] == [1, 2, 3]
    assert all(not m.duplicate for m in first + second)
    other = await history.append(_drafts("other", "a"))
    assert other[0].seq == 1, "each room counts on its own"
    assert await history.last_seqs(["r", "other", "empty"]) == {"r": 3, "other": 1, "empty": 0}


async def test_history_is_idempotent_by_sender_and_client_id(history: History) -> None:
    await history.append(_drafts("r", "a", "b"))
    again = await history.append([*_drafts("r", "b"), *_drafts("r", "c"), *_drafts("r", "c")])
    assert [(m.seq, m.duplicate) for m in again] == [(2, True), (3, False), (3, True)]
    other_sender = await history.append(_drafts("r", "a", sender="u2"))
    assert other_sender[0].seq == 4, "client ids are per sender"
    assert [m.seq for m in await history.after("r", 0, 100)] == [1, 2, 3, 4]


async def test_history_stores_messages_numbered_by_the_node(history: History) -> None:
    def numbered(seq: int, client_id: str, text: str = "") -> Stored:
        return Stored("r", seq, 1.0, "u1", "U", text or f"text {client_id}", client_id)

    (earlier,) = await history.append(_drafts("r", "a"))
    results = await history.insert(
        [
            numbered(2, "b"),
            numbered(3, "a"),  # a retry of "a" the node did not know of: 3 stays unused
            numbered(4, "c"),
            numbered(4, "d"),  # another writer's number
            numbered(5, "e"),
        ]
    )
    assert results[0] == numbered(2, "b")
    assert results[1] is not None
    assert (results[1].seq, results[1].duplicate) == (earlier.seq, True)
    assert [r and (r.seq, r.client_id) for r in results[2:]] == [(4, "c"), None, (5, "e")]
    assert [(m.seq, m.client_id) for m in await history.after("r", 0, 10)] == [
        (1, "a"),
        (2, "b"),
        (4, "c"),
        (5, "e"),
    ], "reads step over the unused number"
    assert [m.seq for m in await history.after("r", 2, 1)] == [4]
    assert [m.seq for m in await history.before("r", 5, 2)] == [2, 4]
    assert await history.last_seqs(["r"]) == {"r": 5}
    again = await history.insert([numbered(5, "e")])
    assert again == [numbered(5, "e")], "storing the same message twice is a no-op"
    assert await history.edit("r", 4, "u1", "edited") is not None


async def test_history_reads_in_order(history: History) -> None:
    await history.append(_drafts("r", *(str(i) for i in range(10))))
    assert [m.seq for m in await history.after("r", 7, 100)] == [8, 9, 10]
    assert [m.seq for m in await history.after("r", 2, 3)] == [3, 4, 5]
    assert [m.seq for m in await history.before("r", None, 3)] == [8, 9, 10]
    assert [m.seq for m in await history.before("r", 4, 10)] == [1, 2, 3]
    assert await history.before("r", 1, 10) == []


async def test_history_edits_and_deletes_only_own(history: History) -> None:
    (message,) = await history.append(_drafts("r", "a"))
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
    results = await asyncio.gather(*(history.append(batch) for batch in batches))
    seqs = sorted(m.seq for batch in results for m in batch)
    assert seqs == list(range(1, 101))


async def test_history_one_batch_numbers_each_room_on_its_own(history: History) -> None:
    await history.append(_drafts("b", "earlier"))
    mixed = [
        *_drafts("a", "1"),
        *_drafts("b", "1"),
        *_drafts("b", "earlier"),  # a retry inside a batch touches only its own room
        *_drafts("a", "2"),
        *_drafts("c", "1"),
        *_drafts("b", "2"),
    ]
    stored = await history.append(mixed)
    assert [(m.room, m.seq, m.duplicate) for m in stored] == [
        ("a", 1, False),
        ("b", 2, False),
        ("b", 1, True),
        ("a", 2, False),
        ("c", 1, False),
        ("b", 3, False),
    ]
    assert [m.client_id for m in await history.after("b", 0, 10)] == ["earlier", "1", "2"]
    assert await history.last_seqs(["a", "b", "c"]) == {"a": 2, "b": 3, "c": 1}


async def test_two_nodes_writing_the_same_rooms_stay_gapless_and_in_order(
    base_settings: Settings,
) -> None:
    """Two nodes (two adapters, one database) race for the same rooms' numbers with
    multi-room batches, and retry sends the other node already stored."""
    assert base_settings.urls.mongo
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(base_settings.urls.mongo)
    database = f"race_{secrets.token_hex(4)}"
    nodes = [MongoHistory(client, database), MongoHistory(client, database)]
    await nodes[0].prepare()
    rooms = ["r1", "r2", "r3"]

    stored_by_node0: list[Draft] = []

    async def node_sends(node: int) -> None:
        for round_ in range(8):
            batch = [Draft(room, f"sender{node}", "U", "t", f"{round_}-{room}") for room in rooms]
            if node == 1 and stored_by_node0:  # a client retrying on node 1 what node 0 stored
                batch.insert(1, stored_by_node0[-2])
            await nodes[node].append(batch)
            if node == 0:
                stored_by_node0.extend(batch)
            await asyncio.sleep(0)

    try:
        await asyncio.gather(node_sends(0), node_sends(1))
        for room in rooms:
            messages = await nodes[0].after(room, 0, 100)
            assert [m.seq for m in messages] == list(range(1, 17)), "a gap or a double"
            for sender in ("sender0", "sender1"):
                own = [m.client_id for m in messages if m.sender_id == sender]
                assert own == [f"{r}-{room}" for r in range(8)], "one sender's order kept"
    finally:
        await client.drop_database(database)
        await client.close()


@pytest.fixture(params=["memory", "postgres", "postgres-cached"])
async def rooms(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[RoomStore]:
    if request.param == "memory":
        yield MemoryRoomStore()
        return
    assert base_settings.urls.database
    pool = await asyncpg.create_pool(base_settings.urls.database, min_size=0, max_size=4)
    store = PostgresRoomStore(pool)
    yield CachedRoomStore(store) if request.param == "postgres-cached" else store
    await pool.close()


def _room(kind: RoomKind = "public") -> Room:
    return Room(
        id=f"r_{secrets.token_hex(6)}",
        kind=kind,
        name="n",
        topic="t",
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
    asked = [(room.id, "ana"), (room.id, "bia"), (room.id, "cid"), ("r_missing", "ana")]
    assert await rooms.members_among(asked) == {(room.id, "ana"), (room.id, "bia")}
    assert await rooms.members_among([]) == set()
    assert await rooms.remove_member(room.id, "bia") is True
    assert await rooms.remove_member(room.id, "bia") is False
    assert await rooms.get("r_missing") is None


async def test_rooms_answered_without_waiting_never_contradict_the_store(
    rooms: RoomStore,
) -> None:
    # A member's send is handled as it is read when these answer; one that said "member"
    # for someone who left would let them talk in a room they are no longer in.
    ana = UserRef(id="ana", name="Ana")
    room = await rooms.create(_room(), [ana])
    assert await rooms.get(room.id) == room
    assert await rooms.is_member(room.id, "ana")
    answers_now = not isinstance(rooms, PostgresRoomStore)  # every answer there is a query

    assert rooms.known_room(room.id) == (room if answers_now else None)
    assert rooms.known_member(room.id, "ana") is answers_now
    assert rooms.known_room("r_missing") is None
    assert rooms.known_member(room.id, "bia") is False
    rooms.forget_member(room.id, "ana")  # a leave heard of elsewhere: memory only
    assert await rooms.is_member(room.id, "ana"), "the store's own answer is unchanged"
    assert await rooms.remove_member(room.id, "ana") is True
    assert rooms.known_member(room.id, "ana") is False, "a member who left is not known"


@pytest.fixture
async def shared_rooms(base_settings: Settings) -> AsyncIterator[PostgresRoomStore]:
    """The PostgreSQL room store that two nodes' caches sit in front of."""
    assert base_settings.urls.database
    pool = await asyncpg.create_pool(base_settings.urls.database, min_size=0, max_size=4)
    yield PostgresRoomStore(pool)
    await pool.close()


async def test_cached_rooms_forget_a_leave_at_once_and_another_nodes_leave_in_time(
    shared_rooms: PostgresRoomStore,
) -> None:
    here, there = (CachedRoomStore(shared_rooms, member_seconds=0.3) for _ in range(2))
    ana = UserRef(id="ana", name="Ana")
    room = await here.create(_room(), [ana])
    assert await here.is_member(room.id, "ana")
    assert await there.is_member(room.id, "ana")
    assert await here.remove_member(room.id, "ana") is True
    assert not await here.is_member(room.id, "ana"), "a leave here counts at once"
    assert await there.is_member(room.id, "ana"), "another node remembers for a while"
    await asyncio.sleep(0.35)
    assert not await there.is_member(room.id, "ana"), "...and no longer than that"
    assert await there.add_member(room.id, ana) is True
    assert await here.is_member(room.id, "ana"), "a 'no' is never remembered"


def _answered_from_memory(check: Coroutine[Any, Any, bool]) -> bool:
    """Run ``check`` to its end if it never waits; fail if it waits (for PostgreSQL)."""
    try:
        check.send(None)
    except StopIteration as answered:
        result: bool = answered.value
        return result
    check.close()
    raise AssertionError("the check waited for the store")


async def test_cached_rooms_renew_a_talking_member_behind_their_frames(
    shared_rooms: PostgresRoomStore,
) -> None:
    """A member who keeps sending is never held up by a membership query, and a leave
    elsewhere still counts within ``member_seconds`` of the last answer."""
    here, there = (CachedRoomStore(shared_rooms, member_seconds=0.8) for _ in range(2))
    ana = UserRef(id="ana", name="Ana")
    room = await here.create(_room(), [ana])
    assert await there.is_member(room.id, "ana")  # asked once, remembered 0.8 s
    for _ in range(16):  # 1.6 s of frames, twice what one answer is believed for
        await asyncio.sleep(0.1)
        assert _answered_from_memory(there.is_member(room.id, "ana"))

    slow = CachedRoomStore(shared_rooms, member_seconds=1.0)
    assert await slow.is_member(room.id, "ana")
    answered = time.monotonic()
    assert await here.remove_member(room.id, "ana") is True
    await asyncio.sleep(0.55)  # into the second half of the entry's time
    assert _answered_from_memory(slow.is_member(room.id, "ana")), "still believed"
    for _ in range(100):  # until the renewal that frame started has its answer
        if not await slow.is_member(room.id, "ana"):
            break
        await asyncio.sleep(0.01)
    assert time.monotonic() - answered < 1.0, "the leave counts before the entry runs out"


async def test_a_closed_cache_asks_postgresql_nothing_more(
    shared_rooms: PostgresRoomStore,
) -> None:
    """A node stopping closes its pool right after its hub: a renewal due then must not
    ask the closed pool (a failure in the log of every clean shutdown)."""
    registry = CollectorRegistry()
    cache = CachedRoomStore(shared_rooms, member_seconds=1.0, metrics=HubMetrics(registry))
    room = await cache.create(_room(), [UserRef(id="ana", name="Ana")])
    assert await cache.is_member(room.id, "ana")  # believed for 1 s
    await asyncio.sleep(0.55)  # into the second half: the next frame starts a renewal
    assert cache.known_member(room.id, "ana")  # the renewal gathers for 0.05 s
    await cache.close()
    assert cache.known_member(room.id, "ana"), "still answered until the entry runs out"
    await asyncio.sleep(0.2)
    assert registry.get_sample_value("papo_membership_renewal_queries_total") == 0


async def test_talking_members_renewed_together_take_one_query(
    shared_rooms: PostgresRoomStore,
) -> None:
    """Every member whose renewal falls due at about the same time is asked about in
    one query; the answer renews those still members and drops the one who left."""
    registry = CollectorRegistry()
    cache = CachedRoomStore(shared_rooms, member_seconds=1.0, metrics=HubMetrics(registry))
    people = [UserRef(id=f"u{i}", name=f"U{i}") for i in range(6)]
    rooms = [await cache.create(_room(), people[:3]), await cache.create(_room(), people[3:])]
    pairs = [(rooms[0].id, p.id) for p in people[:3]] + [(rooms[1].id, p.id) for p in people[3:]]
    for room_id, user_id in pairs:
        assert await cache.is_member(room_id, user_id)  # asked once, believed for 1 s
    answered = time.monotonic()
    assert await shared_rooms.remove_member(*pairs[-1]) is True  # a leave elsewhere
    await asyncio.sleep(0.55)  # into the second half: each one's next frame renews it
    for room_id, user_id in pairs:
        assert _answered_from_memory(cache.is_member(room_id, user_id))
    await asyncio.sleep(0.2)  # the renewals gather for 0.05 s, then one query answers
    assert registry.get_sample_value("papo_membership_renewal_queries_total") == 1
    assert registry.get_sample_value("papo_membership_renewals_total") == 6
    await asyncio.sleep(max(0.0, answered + 1.1 - time.monotonic()))  # past the first answers
    for room_id, user_id in pairs[:-1]:
        assert _answered_from_memory(cache.is_member(room_id, user_id)), "renewed"
    assert not await cache.is_member(*pairs[-1]), "the one who left is asked about again"


async def test_renewals_that_fall_due_during_a_slow_query_are_gathered_too(
    shared_rooms: PostgresRoomStore, base_settings: Settings
) -> None:
    """While PostgreSQL is slow, renewals keep falling due during each query: they wait
    to be gathered like the first ones, not asked back to back as each query ends."""
    registry = CollectorRegistry()
    cache = CachedRoomStore(shared_rooms, member_seconds=1.0, metrics=HubMetrics(registry))
    people = [UserRef(id=f"u{i}", name=f"U{i}") for i in range(3)]
    room = await cache.create(_room(), people)
    locker = await asyncpg.connect(base_settings.urls.database)  # before the clock starts
    for person in people:
        assert await cache.is_member(room.id, person.id)  # believed for 1 s
    await asyncio.sleep(0.55)  # into the second half: each next frame starts a renewal
    try:
        locked = locker.transaction()
        await locked.start()
        await locker.execute("LOCK TABLE room_members IN ACCESS EXCLUSIVE MODE")
        assert _answered_from_memory(cache.is_member(room.id, "u0"))
        await asyncio.sleep(0.1)  # gathered for 0.05 s, then its query waits for the lock
        assert _answered_from_memory(cache.is_member(room.id, "u1"))  # due meanwhile
        await locked.rollback()
        await asyncio.sleep(0.01)  # long enough for the first query to answer
        assert _answered_from_memory(cache.is_member(room.id, "u2"))  # due just after
        await asyncio.sleep(0.15)
    finally:
        await locker.close()
    assert registry.get_sample_value("papo_membership_renewals_total") == 3
    assert registry.get_sample_value("papo_membership_renewal_queries_total") == 2


async def test_a_leave_during_a_renewal_wins_over_the_renewals_answer(
    shared_rooms: PostgresRoomStore, base_settings: Settings
) -> None:
    """A renewal asks PostgreSQL while the member leaves on another node: the renewal's
    "still a member", read before the leave, must not bring the membership back for
    another ``member_seconds`` over the ``room.left`` notice that came meanwhile."""
    cache = CachedRoomStore(shared_rooms, member_seconds=1.0)
    ana = UserRef(id="ana", name="Ana")
    room = await cache.create(_room(), [ana])
    locker = await asyncpg.connect(base_settings.urls.database)  # before the clock starts
    assert await cache.is_member(room.id, "ana")  # asked once, believed for 1 s
    await asyncio.sleep(0.55)  # into the second half: the next frame starts a renewal
    try:
        locked = locker.transaction()
        await locked.start()
        await locker.execute("LOCK TABLE room_members IN ACCESS EXCLUSIVE MODE")
        assert _answered_from_memory(cache.is_member(room.id, "ana"))  # renewal waits
        await asyncio.sleep(0.1)
        cache.forget_member(room.id, "ana")  # the notice of a leave lands meanwhile
        await locked.rollback()  # the renewal's query answers from before the leave
        await asyncio.sleep(0.1)
    finally:
        await locker.close()
    assert await shared_rooms.remove_member(room.id, "ana") is True  # the leave itself
    assert not await cache.is_member(room.id, "ana"), "the next frame asks PostgreSQL"


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


@pytest.fixture(params=["memory", "redis"])
async def presence(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[Presence]:
    if request.param == "memory":
        yield MemoryPresence()
        return
    assert base_settings.urls.redis
    redis = connect_redis(base_settings.urls.redis)
    adapter = RedisPresence(redis, HubMetrics(CollectorRegistry()), node_id=_name("node"))
    yield adapter
    await adapter.stop()
    await redis.aclose()


def _name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def test_presence_reports_edges(presence: Presence) -> None:
    room, ana = _name("r"), UserRef(id=_name("ana"), name="Ana")
    assert await presence.add(room, ana, "c1") is True
    assert await presence.add(room, ana, "c2") is False
    assert await presence.online(room) == [ana]
    assert await presence.remove(room, ana.id, "c1") is False
    assert await presence.remove(room, ana.id, "c2") is True
    assert await presence.remove(room, ana.id, "c2") is False
    assert await presence.online(room) == []
    assert await presence.connect(ana.id, "c1") is True
    assert await presence.connect(ana.id, "c2") is False
    assert await presence.is_online(ana.id)
    assert await presence.disconnect(ana.id, "c1") is False
    assert await presence.disconnect(ana.id, "c2") is True
    assert not await presence.is_online(ana.id)
    assert len(await presence.nodes()) >= 1


async def test_redis_presence_is_shared_and_expires_a_crashed_node(
    base_settings: Settings,
) -> None:
    """Two nodes on one Redis: first-in/last-out spans nodes; a node that stops refreshing
    (crashed) has its users reported as gone by the survivor within TTL + reap interval."""
    assert base_settings.urls.redis
    redis = connect_redis(base_settings.urls.redis)
    metrics = HubMetrics(CollectorRegistry())
    survivor = RedisPresence(redis, metrics, node_id=_name("a"), ttl_seconds=1.5, reap_seconds=0.2)
    doomed = RedisPresence(redis, metrics, node_id=_name("b"), ttl_seconds=1.5, reap_seconds=0.2)
    changes: list[tuple[str, str, bool]] = []

    async def changed(room: str, user: UserRef, online: bool) -> None:
        changes.append((room, user.id, online))

    await survivor.start(changed)
    await doomed.start(changed)
    room = _name("r")
    ana, bob = UserRef(id=_name("ana"), name="Ana"), UserRef(id=_name("bob"), name="Bob")
    try:
        assert await survivor.add(room, ana, "a-1") is True
        assert await doomed.add(room, ana, "b-1") is False, "ana is already there via node a"
        assert await doomed.add(room, bob, "b-2") is True
        assert sorted(u.id for u in await survivor.online(room)) == sorted([ana.id, bob.id])
        assert {survivor.node_id, doomed.node_id} <= set(await survivor.nodes())
        assert doomed._task is not None
        doomed._task.cancel()  # the node dies: no more refreshes, no goodbye
        started = asyncio.get_running_loop().time()
        while (room, bob.id, False) not in changes:
            await asyncio.sleep(0.05)
            assert asyncio.get_running_loop().time() - started < 5, changes
        took = asyncio.get_running_loop().time() - started
        assert took <= 1.5 + 0.2 + 0.5
        assert (room, ana.id, False) not in changes, "ana still has a live connection on node a"
        assert [u.id for u in await survivor.online(room)] == [ana.id]
        assert doomed.node_id not in await survivor.nodes()
    finally:
        await survivor.stop()
        await redis.aclose()


async def test_redis_presence_rewrites_entries_lost_in_an_outage(base_settings: Settings) -> None:
    """Entries wiped from Redis (a restart without persistence) come back with the next
    refresh, and the users are reported online again."""
    assert base_settings.urls.redis
    redis = connect_redis(base_settings.urls.redis)
    node = RedisPresence(
        redis, HubMetrics(CollectorRegistry()), node_id=_name("n"), ttl_seconds=0.6
    )
    back: list[tuple[str, str, bool]] = []

    async def changed(room: str, user: UserRef, online: bool) -> None:
        back.append((room, user.id, online))

    room, ana = _name("r"), UserRef(id=_name("ana"), name="Ana")
    await node.add(room, ana, "c1")
    await redis.delete(room_key(room), ENTRIES)
    assert await node.online(room) == []
    await node.start(changed)
    try:
        for _ in range(40):
            if back:
                break
            await asyncio.sleep(0.05)
        assert back == [(room, ana.id, True)]
        assert await node.online(room) == [ana]
    finally:
        await node.stop()
        await redis.aclose()


@pytest.fixture(params=["memory", "redis", "redis-sharded"])
async def broker_factory(
    request: pytest.FixtureRequest, base_settings: Settings
) -> AsyncIterator[Callable[[], Broker]]:
    made: list[Broker] = []

    def make() -> Broker:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker()
        else:
            assert base_settings.urls.redis
            broker = RedisBroker(
                base_settings.urls.redis,
                HubMetrics(CollectorRegistry()),
                sharded=request.param == "redis-sharded",
            )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        await broker.stop()


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_broker_delivers_subscribed_channels_in_publish_order(
    broker_factory: Callable[[], Broker],
) -> None:
    broker = broker_factory()
    got: list[tuple[str, bytes]] = []
    await broker.start(lambda channel, payload: got.append((channel, payload)), lambda: None)
    assert broker.ready
    a, b = _name("a"), _name("b")
    await broker.subscribe(a)
    await asyncio.sleep(0.05)  # a network broker confirms the subscription asynchronously
    for i in range(100):
        await broker.publish(a, b"%d" % i)
    await broker.publish(b, b"not subscribed")
    await _until(lambda: len(got) >= 100)
    assert got == [(a, b"%d" % i) for i in range(100)]
    await broker.unsubscribe(a)
    await asyncio.sleep(0.05)
    await broker.publish(a, b"after")
    await asyncio.sleep(0.1)
    assert len(got) == 100


async def test_broker_publishes_a_batch_across_channels_in_order(
    broker_factory: Callable[[], Broker],
) -> None:
    broker = broker_factory()
    got: list[tuple[str, bytes]] = []
    await broker.start(lambda channel, payload: got.append((channel, payload)), lambda: None)
    a, b, quiet = _name("a"), _name("b"), _name("quiet")
    await broker.subscribe(a)
    await broker.subscribe(b)
    await asyncio.sleep(0.05)
    batch = [(a if i % 3 else b, b"%d" % i) for i in range(60)] + [(quiet, b"unheard")]
    await broker.publish_many(batch)
    await broker.publish_many([(a, b"alone")])
    await _until(lambda: len(got) >= 61)
    assert got == [*batch[:-1], (a, b"alone")], "every payload once, in the order given"


def _count(reply: Any, channel: str) -> int:
    """PUBSUB (SHARD)NUMSUB's reply, parsed by redis-py into pairs or left flat."""
    flat = not isinstance(reply[0], tuple)
    pairs = list(zip(reply[::2], reply[1::2], strict=True)) if flat else reply
    return int(dict(pairs)[channel.encode()])


@pytest.mark.parametrize("sharded", [False, True], ids=["classic", "sharded"])
async def test_redis_broker_crosses_nodes_with_one_subscription_each(
    sharded: bool, base_settings: Settings
) -> None:
    assert base_settings.urls.redis
    url = base_settings.urls.redis
    metrics = HubMetrics(CollectorRegistry())
    first, second = (RedisBroker(url, metrics, sharded=sharded) for _ in range(2))
    got: list[bytes] = []
    await first.start(lambda channel, payload: None, lambda: None)
    await second.start(lambda channel, payload: got.append(payload), lambda: None)
    channel = _name("room")
    redis = connect_redis(url)
    try:
        for _ in range(3):  # three local listeners still make one subscription
            await second.subscribe(channel)
        command = "PUBSUB SHARDNUMSUB" if sharded else "PUBSUB NUMSUB"
        subscribers = 0
        for _ in range(100):
            reply = await redis.execute_command(command, channel)  # type: ignore[no-untyped-call]
            subscribers = int(
                dict(
                    reply
                    if isinstance(reply[0], tuple)
                    else zip(reply[::2], reply[1::2], strict=True)
                )[channel.encode()]
            )
            if subscribers:
                break
            await asyncio.sleep(0.02)
        assert subscribers == 1, "one subscription per node and channel"
        payload = b'3 r\n{"type":"message"}'
        await first.publish(channel, payload)
        await _until(lambda: got == [payload])
    finally:
        await first.stop()
        await second.stop()
        await redis.aclose()


async def test_redis_broker_survives_a_redis_restart(tmp_path: Path) -> None:
    """Its own Redis, killed and started again on the same port: publishing fails while
    it is down (so nothing is acknowledged), the subscriber comes back by itself,
    re-subscribes and reports it so the hub can fill the gap from history."""
    port = free_port()
    argv = throwaway_redis_argv(port, tmp_path)
    metrics = HubMetrics(CollectorRegistry())
    process = ManagedProcess("redis", argv, log_path=tmp_path / "redis.log")
    wait_for_port(process, port)
    broker = RedisBroker(f"redis://127.0.0.1:{port}/0", metrics, ping_seconds=0.3)
    got: list[bytes] = []
    resubscribed: list[float] = []
    await broker.start(lambda channel, payload: got.append(payload), lambda: resubscribed.append(1))
    try:
        await broker.subscribe("room:x")
        await asyncio.sleep(0.05)
        await broker.publish("room:x", b"before")
        await _until(lambda: got == [b"before"])
        process.stop()
        await _until(lambda: not broker.ready)
        with pytest.raises(BrokerError):
            await broker.publish("room:x", b"during")
        with pytest.raises(BrokerError):
            await broker.publish_many([("room:x", b"during"), ("room:y", b"during")])
        process = ManagedProcess("redis", argv, log_path=tmp_path / "redis.log")
        wait_for_port(process, port)
        await _until(lambda: broker.ready and resubscribed == [1], seconds=10)
        await broker.publish("room:x", b"after")
        await _until(lambda: got == [b"before", b"after"])
        assert _sample(metrics, "papo_broker_errors_total", op="publish") == 2
        assert _sample(metrics, "papo_broker_reconnects_total") == 1
    finally:
        await broker.stop()
        process.stop()


def _sample(metrics: HubMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
