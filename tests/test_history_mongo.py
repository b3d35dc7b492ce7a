"""MongoHistory against a real MongoDB-wire server, seen through a proxy: writes whose
reply is lost (a dropped connection, a primary change) or whose durability the store
could not confirm are tried again and take effect exactly once, many rooms' lookups do
not open a connection each, and a write too big for one command is split without
losing its order."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import WriteConcernError

from papo.hub.history import Draft, Stored
from papo.persistence.history_mongo import LEGACY_KEY_INDEX, READ_CONCURRENCY, MongoHistory
from papo.persistence.mongo import connect_mongo
from papo.server.config import Settings
from papo.server.embedded.process import ManagedProcess, free_port, wait_for_port
from tests.proxy import TcpProxy

INSERT = b"\x02insert\x00"  # the first key of an OP_MSG insert command, as BSON
FIND_AND_MODIFY = b"\x02findAndModify\x00"


@pytest.fixture
async def direct(base_settings: Settings) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    assert base_settings.urls.mongo
    client = connect_mongo(base_settings.urls.mongo)
    yield client
    await client.close()


async def test_an_insert_whose_reply_is_lost_is_stored_once_and_acknowledged(
    mongo_proxy: tuple[TcpProxy, str], direct: AsyncMongoClient[dict[str, Any]]
) -> None:
    proxy, url = mongo_proxy
    database = f"failover_{secrets.token_hex(4)}"
    client = connect_mongo(url)
    history = MongoHistory(client, database)
    try:
        await history.prepare()
        (first,) = await history.append([Draft("r", "u1", "U", "before", "c0")])
        proxy.armed = INSERT
        stored = await history.append(
            [Draft("r", "u1", "U", f"m{n}", f"c{n}") for n in range(1, 4)]
        )
        after = await history.append([Draft("r", "u1", "U", "after", "c9")])
    finally:
        await client.close()

    assert proxy.cuts == 1, "the insert's reply was dropped"
    assert [(m.seq, m.duplicate) for m in stored] == [(2, False), (3, False), (4, False)], (
        "acknowledged as stored by this send, not as someone's duplicate"
    )
    assert (first.seq, after[0].seq) == (1, 5), "numbering goes on without a gap"
    docs = await direct[database]["messages"].find({"room": "r"}).sort("seq").to_list()
    assert [(d["seq"], d["text"]) for d in docs] == [
        (1, "before"),
        (2, "m1"),
        (3, "m2"),
        (4, "m3"),
        (5, "after"),
    ], "each message stored exactly once"


@pytest.fixture
async def failing_store(tmp_path: Path) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """A MongoDB-wire server of its own that takes mongod's ``configureFailPoint`` test
    command, which the shared one (like a production mongod) refuses."""
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "secantusd-py"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--storage-path", str(tmp_path / "store"), "--standalone"),
        "--enable-test-commands",
    ]
    process = ManagedProcess("mongo", argv, log_path=tmp_path / "mongo.log")
    try:
        wait_for_port(process, port)
        client = connect_mongo(f"mongodb://127.0.0.1:{port}/")
        try:
            yield client
        finally:
            await client.close()
    finally:
        process.stop()


async def test_a_write_whose_durability_is_not_confirmed_is_not_acknowledged_then_stored_once(
    failing_store: AsyncMongoClient[dict[str, Any]],
) -> None:
    # The store ran the insert but could not confirm the write concern (a journal or
    # replication timeout): papo must not acknowledge it, and writing it again (as the
    # node's write-behind does) must neither store it twice nor renumber it.
    history = MongoHistory(failing_store, "papo")
    await history.prepare()
    now = time.time()
    numbered = [Stored("r", n, now, "u1", "U", f"m{n}", f"c{n}") for n in range(1, 5)]
    assert await history.insert(numbered[:1]) == numbered[:1]
    await failing_store.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {
                "failCommands": ["insert"],
                "writeConcernError": {"code": 64, "errmsg": "waiting for replication timed out"},
            },
        }
    )

    with pytest.raises(WriteConcernError, match="waiting for replication timed out"):
        await history.insert(numbered[1:])
    again = await history.insert(numbered[1:])

    assert again == numbered[1:], "acknowledged as these messages, with their numbers"
    docs = await failing_store["papo"]["messages"].find({"room": "r"}).sort("seq").to_list()
    assert [(d["seq"], d["text"]) for d in docs] == [(n, f"m{n}") for n in range(1, 5)]


async def test_an_edit_or_delete_whose_reply_is_lost_still_reports_success(
    mongo_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, url = mongo_proxy
    client = connect_mongo(url)
    history = MongoHistory(client, f"failover_{secrets.token_hex(4)}")
    try:
        await history.prepare()
        (message,) = await history.append([Draft("r", "u1", "U", "typo", "c1")])
        proxy.armed = FIND_AND_MODIFY
        edited = await history.edit("r", message.seq, "u1", "fixed")
        proxy.armed = FIND_AND_MODIFY
        deleted = await history.delete("r", message.seq, "u1")
        again = await history.delete("r", message.seq, "u1")
    finally:
        await client.close()

    assert proxy.cuts == 2
    assert edited is not None
    assert edited.text == "fixed"
    assert deleted is not None, "its first attempt had deleted it: found deleted, not missing"
    assert deleted.deleted
    assert again is None, "a delete the user repeats still finds nothing left to delete"


async def test_many_rooms_are_read_a_few_at_a_time(
    mongo_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, url = mongo_proxy
    client = connect_mongo(url)
    database = f"lookups_{secrets.token_hex(4)}"
    history = MongoHistory(client, database)
    rooms = [f"room-{n}" for n in range(60)]
    try:
        await history.prepare()
        await history.append([Draft(room, "u1", "U", "hi", f"{room}-1") for room in rooms[:30]])
        opened_before = proxy.connections
        # A node's first sends after a start: every room's highest is unknown to it.
        fresh = MongoHistory(client, database)
        stored = await fresh.append([Draft(room, "u1", "U", "again", "2") for room in rooms])
        last = await fresh.last_seqs(rooms)
        # Clients reconnecting to many rooms at once.
        newest = await asyncio.gather(*(fresh.before(room, None, 5) for room in rooms))
        missed = await asyncio.gather(*(fresh.after(room, 0, 5) for room in rooms))
    finally:
        await client.close()

    assert [m.seq for m in stored] == [2] * 30 + [1] * 30
    assert last == {room: 2 if n < 30 else 1 for n, room in enumerate(rooms)}
    assert [len(page) for page in newest] == [2] * 30 + [1] * 30
    assert [len(page) for page in missed] == [2] * 30 + [1] * 30
    assert proxy.connections - opened_before <= READ_CONCURRENCY, (
        f"{proxy.connections - opened_before} new connections for 60 rooms"
    )


class CommandsSent(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_room_read_at_join_is_written_in_one_insert_and_a_stale_number_leaves_no_gap(
    base_settings: Settings, direct: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A join reads the room's last number; the node's first send there after a start
    is then one insert, with no read of the room's highest inside the write that every
    room's sends share. Another node writing meanwhile makes that number stale: the
    insert is refused, and the message takes the next free number."""
    assert base_settings.urls.mongo
    database = f"learned_{secrets.token_hex(4)}"
    other = MongoHistory(direct, database)  # another node on the same store
    await other.prepare()
    await other.append([Draft("r", "u2", "B", f"b{n}", f"b{n}") for n in range(2)])
    sent = CommandsSent()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        base_settings.urls.mongo, retryWrites=False, event_listeners=[sent]
    )
    node = MongoHistory(client, database)
    try:
        joined = await node.last_seqs(["r"])  # what answering a join reads
        sent.names.clear()
        (first,) = await node.append([Draft("r", "u1", "A", "hi", "a1")])
        first_write = list(sent.names)
        await other.append([Draft("r", "u2", "B", "meanwhile", "b2")])  # seq 4
        (second,) = await node.append([Draft("r", "u1", "A", "again", "a2")])
        await other.append([Draft("r", "u2", "B", "then", "b3")])  # seq 6
        newest = await node.before("r", None, 1)  # a join with history learns it too
        sent.names.clear()
        (third,) = await node.append([Draft("r", "u1", "A", "last", "a3")])
        third_write = list(sent.names)
    finally:
        await client.close()

    assert joined == {"r": 2}
    assert first.seq == 3
    assert first_write == ["insert"], "no read of the room's highest inside the write"
    assert second.seq == 5, "refused at the stale number 4, stored at the next free one"
    assert newest[-1].seq == 6
    assert third.seq == 7
    assert third_write == ["insert"]
    docs = await direct[database]["messages"].find({"room": "r"}).sort("seq").to_list()
    assert [(d["seq"], d["client_id"]) for d in docs] == [
        (1, "b0"),
        (2, "b1"),
        (3, "a1"),
        (4, "b2"),
        (5, "a2"),
        (6, "b3"),
        (7, "a3"),
    ], "every number used once, none skipped"


async def test_a_write_too_big_for_one_command_goes_out_in_several_in_order(
    direct: AsyncMongoClient[dict[str, Any]],
) -> None:
    """A group commit bigger than MongoDB's 16 MiB command limit is split; a refusal in
    a later part still names the right message, and nothing after it is lost."""
    database = f"chunks_{secrets.token_hex(4)}"
    history = MongoHistory(direct, database)
    await history.prepare()

    def message(seq: int, client_id: str) -> Stored:
        return Stored("r", seq, 1.0, "u1", "U", f"{seq} " + "x" * 2**20, client_id)

    (first,) = await history.insert([message(1, "c1")])
    # 18 MiB in one write; c1 again at 12 (a retry the node did not know of) falls
    # in a later command than the first.
    batch = [message(seq, "c1" if seq == 12 else f"c{seq}") for seq in range(2, 20)]
    results = await history.insert(batch)

    assert first == message(1, "c1")
    assert [(r.seq, r.duplicate) if r else None for r in results] == [
        (1, True) if seq == 12 else (seq, False) for seq in range(2, 20)
    ], "the retry is answered with the stored message; the rest are stored as numbered"
    docs = await direct[database]["messages"].find({"room": "r"}, {"text": 0}).to_list()
    assert sorted((d["seq"], d["client_id"]) for d in docs) == [(1, "c1")] + [
        (seq, f"c{seq}") for seq in range(2, 20) if seq != 12
    ]


async def test_a_message_is_keyed_by_its_draft_key_with_one_index_beside(
    direct: AsyncMongoClient[dict[str, Any]],
) -> None:
    """The draft key is the _id, so the store keeps one index of its own per message
    written (room, seq) instead of two: a third less of its work per insert."""
    database = f"keys_{secrets.token_hex(4)}"
    history = MongoHistory(direct, database)
    await history.prepare()
    await history.insert([Stored("r", 1, 1.0, "u1", "U", "one", "c1")])
    await history.append([Draft("r", "u2", "V", "two", "c1")])

    messages = direct[database]["messages"]
    docs = await messages.find({"room": "r"}).sort("seq").to_list()
    assert [d["_id"] for d in docs] == [
        {"room": "r", "sender_id": "u1", "client_id": "c1"},
        {"room": "r", "sender_id": "u2", "client_id": "c1"},
    ]
    assert set(await messages.index_information()) == {"_id_", "room_seq"}


async def test_a_collection_from_earlier_papo_still_recognises_retries_of_its_messages(
    direct: AsyncMongoClient[dict[str, Any]],
) -> None:
    """Messages stored before the draft key became the _id have a server-made _id and
    only the old draft-key index protects them: a retry of one is still answered with
    the stored message on both write paths (one node's and several nodes'), stored
    once, and papo leaves the old index in place."""
    database = f"legacy_{secrets.token_hex(4)}"
    messages = direct[database]["messages"]
    await messages.create_index([("room", 1), ("seq", 1)], unique=True, name="room_seq")
    await messages.create_index(
        [("room", 1), ("sender_id", 1), ("client_id", 1)], unique=True, name=LEGACY_KEY_INDEX
    )
    old = {"room": "r", "seq": 1, "ts": 1.0, "sender_id": "u1", "sender_name": "U"}
    await messages.insert_one({**old, "text": "old", "client_id": "c1"})
    history = MongoHistory(direct, database)
    await history.prepare()

    (numbered_again,) = await history.insert([Stored("r", 2, 2.0, "u1", "U", "old", "c1")])
    retried, fresh = await history.append(
        [Draft("r", "u1", "U", "old", "c1"), Draft("r", "u1", "U", "new", "c2")]
    )

    assert numbered_again is not None
    assert (numbered_again.seq, numbered_again.duplicate) == (1, True)
    assert (retried.seq, retried.duplicate, retried.text) == (1, True, "old")
    assert (fresh.seq, fresh.duplicate) == (2, False)
    docs = await messages.find({"room": "r"}).sort("seq").to_list()
    assert [(d["seq"], d["client_id"]) for d in docs] == [(1, "c1"), (2, "c2")]
    assert isinstance(docs[0]["_id"], ObjectId)
    assert LEGACY_KEY_INDEX in await messages.index_information()
