"""One node numbers, fans out, then stores: what rooms and senders see of it.

The store is the real MongoDB-wire server behind a proxy that can hold its writes
(as a slow journal would) or drop it altogether, while reads go on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from papo.hub import write_behind
from papo.hub.history import Draft, Stored
from papo.hub.metrics import HubMetrics
from papo.hub.write_behind import HistoryBehind, NotStoredYet, WriteBehind
from papo.persistence.history_mongo import MongoHistory
from papo.persistence.mongo import connect_mongo, ping
from papo.server.config import Settings
from tests.proxy import TcpProxy

INSERT = b"\x02insert\x00"  # the first key of an OP_MSG insert command, as BSON
FIND = b"\x02find\x00"


@dataclass
class Node:
    """A write-behind line over MongoDB through the proxy, and what it fanned out."""

    proxy: TcpProxy
    history: MongoHistory
    through_proxy: AsyncMongoClient[dict[str, Any]]
    direct: AsyncMongoClient[dict[str, Any]]
    database: str
    metrics: HubMetrics = field(default_factory=lambda: HubMetrics(CollectorRegistry()))
    published: list[Stored] = field(default_factory=list)
    writes: WriteBehind | None = None

    def start(self) -> WriteBehind:
        self.writes = WriteBehind(self.history, self.published.extend, self.metrics)
        return self.writes

    async def store_back(self) -> None:
        """Ends an outage and waits until the node's client sees the store again.

        The client re-checks a server it lost at most every half second, which is also
        the node's selection timeout here: an operation begun at once could time out
        before the re-check, an artefact of the short timeout (papo's default is 5 s).
        """
        self.proxy.up()
        deadline = time.monotonic() + 10
        while True:
            try:
                await ping(self.through_proxy)
                return
            except PyMongoError:
                assert time.monotonic() < deadline, "the store did not come back"
                await asyncio.sleep(0.05)

    async def stored(self, room: str) -> list[tuple[int, str]]:
        docs = self.direct[self.database]["messages"].find({"room": room}).sort("seq")
        return [(doc["seq"], doc["text"]) async for doc in docs]


@pytest.fixture
async def node(mongo_proxy: tuple[TcpProxy, str], base_settings: Settings) -> AsyncIterator[Node]:
    proxy, url = mongo_proxy
    assert base_settings.urls.mongo
    client = connect_mongo(url, timeout=0.5)  # an outage shows within half a second
    direct = connect_mongo(base_settings.urls.mongo)
    database = f"behind_{secrets.token_hex(4)}"
    history = MongoHistory(client, database)
    await history.prepare()
    built = Node(proxy, history, client, direct, database)
    yield built
    proxy.unstall()
    proxy.up()
    if built.writes is not None:
        await built.writes.drain(5)
    await client.close()
    await direct.close()


def _draft(room: str, client_id: str, text: str = "", sender: str = "u1") -> Draft:
    return Draft(room, sender, "U", text or f"text {client_id}", client_id)


async def _until(predicate: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_the_room_sees_a_message_before_its_write_lands_and_the_sender_after(
    node: Node,
) -> None:
    writes = node.start()
    await writes.submit(_draft("r", "c0", "warm"))  # the room is known; its write done
    node.proxy.stall(INSERT)
    ack = writes.submit(_draft("r", "c1", "hello"))
    await _until(lambda: node.proxy.stalled == 1)

    assert [(m.seq, m.text) for m in node.published] == [(1, "warm"), (2, "hello")]
    assert not ack.done(), "no ack before the write is durable"
    assert await node.stored("r") == [(1, "warm")]
    view = writes.view
    assert [m.text for m in await view.after("r", 0, 10)] == ["warm", "hello"], "resume sees it"
    assert [m.text for m in await view.before("r", None, 1)] == ["hello"], "a join sees it"
    assert await view.last_seqs(["r", "other"]) == {"r": 2, "other": 0}

    node.proxy.unstall()
    stored = await ack
    assert (stored.seq, stored.duplicate) == (2, False)
    assert await node.stored("r") == [(1, "warm"), (2, "hello")]
    assert [m.text for m in await view.after("r", 0, 10)] == ["warm", "hello"], "once each"


async def test_sends_meanwhile_are_shown_at_once_and_share_the_next_write(node: Node) -> None:
    writes = node.start()
    await writes.submit(_draft("a", "c0"))
    node.proxy.stall(INSERT)
    first = writes.submit(_draft("a", "c1"))
    await _until(lambda: node.proxy.stalled == 1)
    later = [writes.submit(_draft(room, "c2")) for room in ("a", "b", "c")]
    await _until(lambda: len(node.published) == 5)
    shown = [(m.room, m.seq) for m in node.published[1:]]
    assert shown[:2] == [("a", 2), ("a", 3)], "in order, while the write before them is held"
    assert sorted(shown[2:]) == [("b", 1), ("c", 1)], "new rooms too, once learned"

    node.proxy.unstall()
    acks = await asyncio.gather(first, *later)
    assert [(m.room, m.seq) for m in acks] == [("a", 2), ("a", 3), ("b", 1), ("c", 1)]
    batches = node.metrics.registry.get_sample_value("papo_history_write_batch_size_count")
    assert batches == 3, "the three held back went into one write"


def _writes(metrics: HubMetrics) -> int:
    return int(metrics.registry.get_sample_value("papo_history_write_batch_size_count") or 0)


async def test_a_busy_room_is_stored_in_few_writes_and_shown_as_each_message_comes(
    node: Node,
) -> None:
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    before = _writes(node.metrics)

    def shown(count: int) -> Callable[[], bool]:
        return lambda: len(node.published) == count

    started = time.perf_counter()
    acks = []
    for n in range(1, 41):  # a message every 2 ms for 80 ms
        acks.append(writes.submit(_draft("r", f"c{n}")))
        await _until(shown(n + 1))  # at once, before any write
        await asyncio.sleep(0.002)
    stored = await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    assert [m.seq for m in stored] == list(range(2, 42))
    assert len(await node.stored("r")) == 41
    most = elapsed / write_behind.WRITE_GAP + 2
    assert _writes(node.metrics) - before <= most, "one write per gap, not one per message"


async def test_a_retry_is_never_shown_twice_whether_staged_or_stored_before_a_restart(
    node: Node,
) -> None:
    (earlier,) = await node.history.append([_draft("r", "c1", "from before the restart")])
    writes = node.start()

    again = await writes.submit(_draft("r", "c1", "from before the restart"))
    assert (again.seq, again.duplicate) == (earlier.seq, True)
    assert node.published == [], "a message stored before this node started is not re-shown"

    node.proxy.stall(INSERT)
    first = writes.submit(_draft("r", "c2", "new"))
    await _until(lambda: node.proxy.stalled == 1)
    retry = writes.submit(_draft("r", "c2", "new"))
    await asyncio.sleep(0.05)
    node.proxy.unstall()
    acks = await asyncio.gather(first, retry)
    assert [(m.seq, m.duplicate) for m in acks] == [(2, False), (2, True)]
    assert [(m.seq, m.text) for m in node.published] == [(2, "new")], "shown once"
    assert await node.stored("r") == [(1, "from before the restart"), (2, "new")]


async def test_a_retry_older_than_the_nodes_memory_is_acked_as_the_earlier_message(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "SEED_KEYS", 1)  # the node learns only the newest key
    await node.history.append([_draft("r", "old"), _draft("r", "newer")])
    writes = node.start()
    ack = await writes.submit(_draft("r", "old"))
    assert (ack.seq, ack.duplicate) == (1, True), "the store's index recognised it"
    after = await writes.submit(_draft("r", "next"))
    assert after.seq == 4, "the number shown for the retry stays unused"
    assert await node.stored("r") == [(1, "text old"), (2, "text newer"), (4, "text next")]
    assert [m.seq for m in await writes.view.after("r", 0, 10)] == [1, 2, 4]


async def test_a_failed_write_is_retried_and_the_senders_retry_is_acknowledged(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "RETRY_FIRST", 0.05)
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    node.proxy.down()
    first = writes.submit(_draft("r", "c1", "during the outage"))
    with pytest.raises(NotStoredYet):
        await first
    assert [m.seq for m in node.published] == [1, 2], "the room saw it"
    assert (node.metrics.registry.get_sample_value("papo_history_write_errors_total") or 0) >= 1
    assert node.metrics.registry.get_sample_value("papo_history_staged") == 1

    retry = writes.submit(_draft("r", "c1", "during the outage"))
    node.proxy.up()
    ack = await asyncio.wait_for(retry, 30)
    assert (ack.seq, ack.duplicate) == (2, True), "the same message, under its first number"
    assert [m.seq for m in node.published] == [1, 2], "not shown again"
    assert await node.stored("r") == [(1, "text c0"), (2, "during the outage")]
    assert node.metrics.registry.get_sample_value("papo_history_staged") == 0


async def test_past_the_staged_limit_sends_are_refused_before_anyone_sees_them(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "MAX_STAGED", 3)
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    node.proxy.stall(INSERT)
    held = [writes.submit(_draft("r", f"c{n}")) for n in range(1, 4)]
    refused = writes.submit(_draft("r", "c4"))
    with pytest.raises(HistoryBehind):
        await refused
    assert [m.seq for m in node.published] == [1, 2, 3, 4], "the refused one was not shown"
    node.proxy.unstall()
    assert [m.seq for m in await asyncio.gather(*held)] == [2, 3, 4]
    assert (await writes.submit(_draft("r", "c4"))).seq == 5, "accepted once the store caught up"


async def test_an_edit_of_a_message_not_yet_stored_waits_for_its_write(node: Node) -> None:
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    node.proxy.stall(INSERT)
    ack = writes.submit(_draft("r", "c1", "typo"))
    await _until(lambda: node.proxy.stalled == 1)
    edit = asyncio.create_task(writes.view.edit("r", 2, "u1", "fixed"))
    await asyncio.sleep(0.05)
    assert not edit.done()
    node.proxy.unstall()
    edited = await edit
    assert edited is not None
    assert edited.text == "fixed"
    assert (await ack).seq == 2
    assert await node.stored("r") == [(1, "text c0"), (2, "fixed")]


async def test_an_edit_is_refused_when_its_messages_write_fails_and_changes_nothing(
    node: Node,
) -> None:
    """The edit runs in its connection's read loop: during an outage it is told at the
    failed write, not left holding the connection's later frames until the store is back."""
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    node.proxy.down()
    ack = writes.submit(_draft("r", "c1", "typo"))
    edit = asyncio.create_task(writes.view.edit("r", 2, "u1", "fixed"))
    with pytest.raises(NotStoredYet):
        await asyncio.wait_for(edit, write_behind.STORED_WAIT / 2)
    with pytest.raises(NotStoredYet):
        await ack
    assert await node.stored("r") == [(1, "text c0")]

    node.proxy.up()
    edited = await writes.view.edit("r", 2, "u1", "fixed")  # waits for the retried write
    assert edited is not None
    assert edited.text == "fixed"
    assert await node.stored("r") == [(1, "text c0"), (2, "fixed")]


async def test_an_edit_waits_for_a_slow_write_only_so_long(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_behind, "STORED_WAIT", 0.2)
    writes = node.start()
    await writes.submit(_draft("r", "c0"))
    node.proxy.stall(INSERT)
    ack = writes.submit(_draft("r", "c1", "typo"))
    await _until(lambda: node.proxy.stalled == 1)
    with pytest.raises(NotStoredYet, match=r"within 0\.2 s"):
        await asyncio.wait_for(writes.view.delete("r", 2, "u1"), 2)

    node.proxy.unstall()
    assert (await ack).seq == 2
    assert await node.stored("r") == [(1, "text c0"), (2, "typo")], "the refusal changed nothing"
    edited = await asyncio.wait_for(writes.view.edit("r", 2, "u1", "fixed"), 1)
    assert edited is not None
    assert edited.text == "fixed", "stored now: the next edit goes through"


async def test_drain_stores_what_is_staged_and_gives_up_on_a_store_that_never_answers(
    node: Node,
) -> None:
    writes = node.start()
    stored = [writes.submit(_draft("r", f"c{n}")) for n in range(3)]
    await writes.drain(10)
    assert [(await ack).seq for ack in stored] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="shutting down"):
        writes.submit(_draft("r", "late"))

    stuck = node.start()
    await stuck.submit(_draft("r", "c3"))
    node.proxy.stall(INSERT)
    never = stuck.submit(_draft("r", "c4"))
    await _until(lambda: node.proxy.stalled == 1)
    await asyncio.wait_for(stuck.drain(0.2), 10)
    with pytest.raises(RuntimeError, match="shutting down"):
        await never


async def test_a_room_being_learned_holds_only_its_own_messages(node: Node) -> None:
    writes = node.start()
    await writes.submit(_draft("known", "c0"))
    node.proxy.stall(FIND)  # the read that learns a new room's last number is slow
    new_room = [writes.submit(_draft("new", f"c{n}")) for n in range(2)]
    await _until(lambda: node.proxy.stalled == 1)
    other = await writes.submit(_draft("known", "c1"))
    assert other.seq == 2, "another room's message is shown and stored meanwhile"
    assert [m.room for m in node.published] == ["known", "known"]
    later = writes.submit(_draft("new", "c2"))
    node.proxy.unstall()
    acks = await asyncio.gather(*new_room, later)
    assert [m.seq for m in acks] == [1, 2, 3], "the new room's messages keep their order"
    assert [(m.room, m.seq) for m in node.published[2:]] == [("new", 1), ("new", 2), ("new", 3)]


async def test_a_room_is_learned_when_someone_joins_so_its_first_send_reads_nothing(
    node: Node,
) -> None:
    writes = node.start()
    node.proxy.stall(FIND)
    writes.expect("r")  # a member joined
    writes.expect("r")  # and another: the room is read once
    await _until(lambda: node.proxy.stalled == 1)
    node.proxy.unstall()
    node.proxy.stall(FIND)  # every read from here on is slow
    first = await asyncio.wait_for(writes.submit(_draft("r", "c1")), 5)
    assert first.seq == 1
    assert [(m.room, m.seq) for m in node.published] == [("r", 1)]
    assert node.proxy.stalled == 1, "the send itself waited for no read"


async def test_past_the_rooms_limit_the_idle_room_numbered_longest_ago_is_forgotten(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node remembers the numbering of at most ``MAX_ROOMS`` rooms; a room it forgot
    is read again at its next send and goes on without a gap or a repeated retry."""
    monkeypatch.setattr(write_behind, "MAX_ROOMS", 2)
    writes = node.start()
    for room in ("a", "b", "c"):
        await writes.submit(_draft(room, "c1", f"first in {room}"))
    node.proxy.stall(FIND)
    assert (await asyncio.wait_for(writes.submit(_draft("c", "c2")), 5)).seq == 2
    assert (await asyncio.wait_for(writes.submit(_draft("b", "c2")), 5)).seq == 2
    assert node.proxy.stalled == 0, "b and c are still known: no read"
    again = writes.submit(_draft("a", "c2", "second in a"))
    await _until(lambda: node.proxy.stalled == 1)  # a was forgotten: it is read again
    node.proxy.unstall()
    assert (await again).seq == 2, "numbered after what the store holds"
    retry = await writes.submit(_draft("a", "c1", "first in a"))
    assert (retry.seq, retry.duplicate) == (1, True), "a retry is known from the read"
    assert await node.stored("a") == [(1, "first in a"), (2, "second in a")]


async def test_a_room_learned_while_every_other_room_waits_for_the_store_is_kept(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rooms with messages not yet stored are never forgotten; nor is the room just
    read for a send, even when that puts the node past ``MAX_ROOMS`` for a while."""
    monkeypatch.setattr(write_behind, "MAX_ROOMS", 2)
    writes = node.start()
    for room in ("a", "b"):
        await writes.submit(_draft(room, "c1"))
    node.proxy.stall(INSERT)  # a slow journal: what comes now stays staged
    staged = [writes.submit(_draft(room, "c2")) for room in ("a", "b")]
    await _until(lambda: node.proxy.stalled == 1)
    pending = writes.submit(_draft("c", "c1", "hello"))
    await _until(lambda: any(m.room == "c" for m in node.published), seconds=5)
    node.proxy.unstall()
    assert [m.seq for m in await asyncio.gather(*staged, pending)] == [2, 2, 1]
    assert [(m.room, m.seq) for m in node.published if m.room == "c"] == [("c", 1)]


async def test_a_number_a_client_saw_is_never_given_to_another_message(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = node.start()
    await writes.submit(_draft("r", "c1", "stored"))
    node.proxy.down()  # the node dies with message 2 shown and not stored
    lost = writes.submit(_draft("r", "c2", "shown, then lost"))
    await _until(lambda: len(node.published) == 2)
    await writes.drain(0)
    with pytest.raises(RuntimeError):
        await lost
    await node.store_back()

    restarted = node.start()
    restarted.saw("r", 2)  # a client resumes: it saw 2
    restarted.saw("elsewhere", 10**9)  # a member cannot push numbers arbitrarily far
    after = await restarted.submit(_draft("r", "c3", "next"))
    assert after.seq == 3, "2 stays the lost message's number"
    far = await restarted.submit(_draft("elsewhere", "c1"))
    assert far.seq == write_behind.MAX_STAGED + 1
    assert await node.stored("r") == [(1, "stored"), (3, "next")]


async def test_two_lone_nodes_sharing_a_store_are_refused_loudly(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = node.start(), node.start()  # two nodes with the memory broker
    await first.submit(_draft("r", "a1"))
    assert (await second.submit(_draft("r", "b0"))).seq == 2  # it learned the room
    with pytest.raises(RuntimeError, match="taken"):
        await first.submit(_draft("r", "a2"))  # by first's own count, 2 again
    assert await node.stored("r") == [(1, "text a1"), (2, "text b0")]
    assert "memory broker" in caplog.text, "the log names the misconfiguration"


async def test_a_room_that_cannot_be_learned_refuses_its_sends(node: Node) -> None:
    writes = node.start()
    node.proxy.down()
    with pytest.raises(Exception, match=r"(?i)timed out|refused|closed|connect"):
        await writes.submit(_draft("r", "c1"))
    assert node.published == []
    await node.store_back()
    assert (await writes.submit(_draft("r", "c1"))).seq == 1, "learned on the next send"
