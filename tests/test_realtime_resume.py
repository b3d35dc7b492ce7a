"""Resume after a dropped connection: every missed message once, in order, then live."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from papo.client import PapoClient, PapoClientError
from papo.hub.session import MAX_IN_FLIGHT
from papo.server.config import Settings
from papo.server.runner import RunningServer
from tests.conftest import Session, metric, on_one_node, register_and_login, serving, ws_url
from tests.proxy import TcpProxy
from tests.test_write_behind import FIND, INSERT

Connect = Callable[..., Awaitable[PapoClient]]


@pytest.fixture
def settings(both_shapes: Settings) -> Settings:
    """Every test here runs on a node sharing Redis and on a lone node."""
    return both_shapes


async def _until(predicate: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def _collect_messages(client: PapoClient, room: str, until_seq: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while not got or got[-1]["seq"] < until_seq:
        event = await client.next_event(30)
        if event["type"] == "message" and event["room"] == room:
            got.append(event)
    return got


async def test_a_dropped_client_resumes_every_missed_message_once_in_order(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    talker_session = await register_and_login(http, prefix="talker")
    reader_session = await register_and_login(http, prefix="reader")
    talker = await connect(talker_session)
    room = (await talker.request("room.create", name="busy"))["id"]
    await talker.request("room.join", room=room)
    reader = await connect(reader_session)
    await reader.request("room.join", room=room)

    stop = asyncio.Event()
    sent: list[int] = []

    async def keep_talking() -> None:
        n = 0
        while not stop.is_set():
            ack = await talker.send_message(room, f"m{n}")
            sent.append(ack["seq"])
            n += 1
            await asyncio.sleep(0.002)

    talking = asyncio.create_task(keep_talking())
    await _collect_messages(reader, room, until_seq=10)
    await reader.drop()  # the network goes away while the room keeps talking
    at_drop = len(sent)
    await _until(lambda: len(sent) >= at_drop + 10)
    await reader.wait_reconnected(10)
    at_resume = len(sent)
    await _until(lambda: len(sent) >= at_resume + 10)  # live traffic after the resume
    stop.set()
    await talking
    last = sent[-1]
    after_drop = await _collect_messages(reader, room, until_seq=last)
    seqs = [event["seq"] for event in after_drop]
    assert seqs == list(range(11, last + 1)), f"gap or duplicate (closes: {reader.close_codes})"
    assert reader.duplicates_dropped == 0, "the server itself sent nothing twice"
    assert reader.reconnects >= 1, reader.close_codes
    assert at_resume >= at_drop + 10, "the room kept talking during the outage"


async def test_resume_names_the_missed_count_and_replays_then_goes_live(
    http: httpx.AsyncClient, connect: Connect, server: RunningServer
) -> None:
    alice = await register_and_login(http, prefix="alice")
    a = await connect(alice)
    room = (await a.request("room.create", name="r"))["id"]
    await a.request("room.join", room=room)
    for i in range(7):
        await a.send_message(room, f"m{i}")
    fresh = await connect(alice)
    report = await fresh.request("resume", rooms={room: 4})
    assert report["rooms"][room] == {"replayed": 3, "last_seq": 7, "reset": False}
    replayed = [fresh.pending_events()]
    seqs = [e["seq"] for e in replayed[0] if e["type"] == "message"]
    assert seqs == [5, 6, 7]
    await a.send_message(room, "live")
    live = await _collect_messages(fresh, room, until_seq=8)
    assert [e["seq"] for e in live] == [8]
    assert fresh.duplicates_dropped == 0


@pytest.fixture
async def small_resume_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    realtime = dataclasses.replace(base_settings.realtime, resume_limit=5)
    settings = dataclasses.replace(base_settings, realtime=realtime)
    async with serving(settings) as running:
        yield running


async def test_too_far_behind_gets_an_explicit_reset(
    small_resume_server: RunningServer, base_settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=small_resume_server.url) as http:
        session: Session = await register_and_login(http)
    url = ws_url(small_resume_server)
    async with await PapoClient.connect(url, session.access_token) as client:
        room = (await client.request("room.create", name="r"))["id"]
        await client.request("room.join", room=room)
        for i in range(12):
            await client.send_message(room, f"m{i}")
    async with await PapoClient.connect(url, session.access_token) as again:
        report = await again.request("resume", rooms={room: 2})
        assert report["rooms"][room]["reset"] is True
        reset = [e for e in again.pending_events() if e["type"] == "resume.reset"]
        assert reset == [{"type": "resume.reset", "room": room, "last_seq": 12, "missed": 10}]
        with contextlib.suppress(TimeoutError):
            stray = await again.next_event(0.3)
            assert stray["type"] != "message", "nothing is replayed after a reset"


async def test_a_resume_storm_replays_exactly_and_shares_history_queries(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    talker = await connect(await register_and_login(http, prefix="talker"))
    room = (await talker.request("room.create", name="storm"))["id"]
    await talker.request("room.join", room=room)
    sessions = [await register_and_login(http, prefix=f"r{i}") for i in range(4)]
    for session in sessions:
        await (await connect(session)).request("room.join", room=room)
    for i in range(30):
        await talker.send_message(room, f"m{i}")
    before = (await http.get("/metrics")).text

    # 40 connections come back at once, each having seen a different amount.
    seen = [n % 30 for n in range(0, 40 * 7, 7)]
    fresh = [await connect(sessions[n % 4]) for n in range(len(seen))]
    reports = await asyncio.gather(
        *(
            client.request("resume", rooms={room: last})
            for client, last in zip(fresh, seen, strict=True)
        )
    )

    for client, last, report in zip(fresh, seen, reports, strict=True):
        assert report["rooms"][room] == {"replayed": 30 - last, "last_seq": 30, "reset": False}
        replayed = [e["seq"] for e in client.pending_events() if e["type"] == "message"]
        assert replayed == list(range(last + 1, 31)), f"resumed after {last}"
    after = (await http.get("/metrics")).text
    reads, queries = "papo_history_reads_total", "papo_history_queries_total"
    asked = metric(after, reads, read="after") - metric(before, reads, read="after")
    queried = metric(after, queries, read="after") - metric(before, queries, read="after")
    assert asked == len(seen), "every connection read what it missed"
    assert queried < asked / 2, f"{queried} queries for {asked} reads: not shared"


@dataclasses.dataclass
class OneNode:
    """A lone node whose MongoDB is behind the proxy, and two users on it."""

    proxy: TcpProxy
    running: RunningServer
    talker: PapoClient
    reader: PapoClient
    reader_token: str


@pytest.fixture
async def one_node(
    base_settings: Settings, mongo_proxy: tuple[TcpProxy, str]
) -> AsyncIterator[OneNode]:
    proxy, url = mongo_proxy
    settings = on_one_node(base_settings).with_urls(mongo=url)
    async with serving(settings) as running, httpx.AsyncClient(base_url=running.url) as http:
        talker_session = await register_and_login(http, prefix="talker")
        reader_session = await register_and_login(http, prefix="reader")
        talker = await PapoClient.connect(ws_url(running), talker_session.access_token)
        reader = await PapoClient.connect(ws_url(running), reader_session.access_token)
        try:
            yield OneNode(proxy, running, talker, reader, reader_session.access_token)
        finally:
            proxy.unstall()
            proxy.up()
            for client in (talker, reader):
                await client.close()


async def test_messages_shown_before_their_write_lands_reach_joiners_and_resumes(
    one_node: OneNode,
) -> None:
    proxy, talker, reader = one_node.proxy, one_node.talker, one_node.reader
    late = await PapoClient.connect(ws_url(one_node.running), one_node.reader_token)
    try:
        room = (await talker.request("room.create", name="slow store"))["id"]
        await talker.request("room.join", room=room)
        await reader.request("room.join", room=room)
        await talker.send_message(room, "stored")

        proxy.stall(INSERT)  # the store takes its time with every write from here
        sends = [asyncio.create_task(talker.send_message(room, f"m{n}")) for n in range(3)]
        live = await _collect_messages(reader, room, until_seq=4)
        assert [e["text"] for e in live] == ["stored", "m0", "m1", "m2"], "shown at once"
        assert not any(send.done() for send in sends), "no ack before the write lands"

        report = await late.request("resume", rooms={room: 1})
        assert report["rooms"][room]["replayed"] == 3
        replayed = [e["text"] for e in late.pending_events() if e["type"] == "message"]
        assert replayed == ["m0", "m1", "m2"], "a resume gets what is not stored yet"
        page = await late.request("history", room=room, limit=10)
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3, 4]

        proxy.unstall()
        acks = await asyncio.gather(*sends)
        assert [ack["seq"] for ack in acks] == [2, 3, 4]
        await talker.send_message(room, "after")
        more = await _collect_messages(late, room, until_seq=5)
        assert [e["seq"] for e in more] == [5], "then live, with no duplicate"
        assert late.duplicates_dropped == 0
    finally:
        proxy.unstall()
        await late.close()


async def test_a_sender_far_ahead_of_the_store_is_read_no_further_until_acks_come(
    one_node: OneNode,
) -> None:
    """Sends are acknowledged once stored. A client with ``MAX_IN_FLIGHT`` sends
    unacknowledged is read no further: its next send is handled and then nothing more
    until the store answers; then every send is shown and acknowledged, in order."""
    proxy, talker, reader = one_node.proxy, one_node.talker, one_node.reader
    room = (await talker.request("room.create", name="far ahead"))["id"]
    await talker.request("room.join", room=room)
    await reader.request("room.join", room=room)
    await talker.send_message(room, "stored")

    proxy.stall(INSERT)
    total = MAX_IN_FLIGHT + 6
    sends = [asyncio.create_task(talker.send_message(room, f"m{n}")) for n in range(total)]
    shown = await _collect_messages(reader, room, until_seq=MAX_IN_FLIGHT + 2)
    await asyncio.sleep(0.5)
    assert not [e for e in reader.pending_events() if e["type"] == "message"], "read no further"
    assert not any(send.done() for send in sends), "no ack before the write lands"

    proxy.unstall()
    acks = await asyncio.gather(*sends)
    assert [ack["seq"] for ack in acks] == list(range(2, total + 2))
    rest = await _collect_messages(reader, room, until_seq=total + 1)
    assert [e["text"] for e in shown + rest] == ["stored"] + [f"m{n}" for n in range(total)]


async def test_on_one_node_a_rooms_first_message_waits_for_no_store_read(
    one_node: OneNode,
) -> None:
    """A node learns a room's numbering when someone joins, not when the first message
    comes: after a restart, every busy room's first messages would wait for a read."""
    proxy, talker, reader = one_node.proxy, one_node.talker, one_node.reader
    room = (await talker.request("room.create", name="first words"))["id"]
    proxy.stall(FIND)
    joined = asyncio.create_task(talker.request("room.join", room=room))
    await _until(lambda: proxy.stalled >= 1)  # the join started learning the room
    proxy.unstall()
    await joined
    await reader.request("room.join", room=room)
    held = proxy.stalled
    proxy.stall(FIND)  # from here every read from the store is held
    send = asyncio.create_task(talker.send_message(room, "hello"))
    live = await _collect_messages(reader, room, until_seq=1)
    assert [e["text"] for e in live] == ["hello"], "shown while reads are held"
    assert (await send)["seq"] == 1
    assert proxy.stalled == held, "the send waited for no read"


async def test_on_one_node_a_send_the_store_cannot_take_is_refused_and_its_retry_stored_once(
    one_node: OneNode,
) -> None:
    """The room sees the message at once; its sender hears the store failed and retries
    with the same client_id; the retry is acknowledged as that message once it is stored,
    and nobody sees it twice."""
    proxy, talker, reader = one_node.proxy, one_node.talker, one_node.reader
    room = (await talker.request("room.create", name="store outage"))["id"]
    await talker.request("room.join", room=room)
    await reader.request("room.join", room=room)
    await talker.send_message(room, "stored")

    proxy.down()
    with pytest.raises(PapoClientError) as refused:
        await talker.request("message.send", room=room, text="while down", client_id="outage-1")
    assert refused.value.code == "unavailable"
    assert "retry with the same client_id" in str(refused.value)
    live = await _collect_messages(reader, room, until_seq=2)
    assert [e["text"] for e in live] == ["stored", "while down"], "shown at once"
    with pytest.raises(PapoClientError) as not_stored:
        await talker.request("message.edit", room=room, seq=2, text="edited while down")
    assert (not_stored.value.code, not_stored.value.field) == ("unavailable", "seq")
    assert (await talker.request("room.members", room=room))["members"], "the connection goes on"

    proxy.up()
    retried = await talker.request(
        "message.send", room=room, text="while down", client_id="outage-1"
    )
    assert (retried["seq"], retried["duplicate"]) == (2, True)
    await talker.send_message(room, "after")
    more = await _collect_messages(reader, room, until_seq=3)
    assert [(e["seq"], e["text"]) for e in more] == [(3, "after")], "never twice"
    await talker.request("message.edit", room=room, seq=2, text="edited once stored")
    page = await reader.request("history", room=room, limit=10)
    texts = [m["text"] for m in page["messages"]]
    assert texts == ["stored", "edited once stored", "after"], "the refused edit changed nothing"


async def test_on_one_node_a_resume_past_history_keeps_those_numbers_unused(
    base_settings: Settings,
) -> None:
    async with (
        serving(on_one_node(base_settings)) as running,
        httpx.AsyncClient(base_url=running.url) as http,
    ):
        alice = await register_and_login(http, prefix="alice")
        async with await PapoClient.connect(ws_url(running), alice.access_token) as a:
            room = (await a.request("room.create", name="after a crash"))["id"]
            await a.request("room.join", room=room)
            await a.send_message(room, "stored")
            # As after a node died with messages 2 and 3 shown and not yet stored:
            report = await a.request("resume", rooms={room: 3})
            assert report["rooms"][room] == {"replayed": 0, "last_seq": 3, "reset": False}
            ack = await a.send_message(room, "next")
            assert ack["seq"] == 4, "the numbers the client saw are not handed out again"
            live = await _collect_messages(a, room, until_seq=4)
            assert [e["seq"] for e in live][-1] == 4, "and the client does not skip it"
