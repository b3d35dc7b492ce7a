"""papo's own WebSocket protocol: handshake rules, framing, flow control, keepalive."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import re
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.client import connect as connect_ws
from websockets.exceptions import ConnectionClosed, InvalidStatus

from papo.client import PapoClient
from papo.protocol.close_codes import CloseCode
from papo.server.config import Settings
from papo.server.runner import RunningServer
from tests.conftest import (
    Session,
    member_that_stops_reading,
    metric,
    register_and_login,
    serving,
    ws_url,
)

Connect = Callable[..., Awaitable[PapoClient]]


def _roomy(base_settings: Settings) -> Settings:
    """Room for a firehose: no frame rate limit, a deep outbox, 15 KB messages."""
    realtime = dataclasses.replace(
        base_settings.realtime,
        frames_per_second=10_000,
        frame_burst=10_000,
        outbox_frames=4096,
        max_message_length=16_000,
    )
    return dataclasses.replace(base_settings, realtime=realtime)


@pytest.fixture
async def roomy_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    async with serving(_roomy(base_settings)) as running:
        yield running


@pytest.fixture
async def impatient_server(base_settings: Settings) -> AsyncIterator[RunningServer]:
    realtime = dataclasses.replace(base_settings.realtime, heartbeat_seconds=0.3)
    async with serving(dataclasses.replace(base_settings, realtime=realtime)) as running:
        yield running


async def test_frames_of_every_length_class_arrive_intact(
    connect: Connect, customer: Session
) -> None:
    client = await connect(customer)
    room = (await client.request("room.create", name="sizes"))["id"]
    await client.request("room.join", room=room)
    # Payloads under 126 bytes, under 64 KiB, and (the history reply) over 64 KiB.
    texts = ["short", "m" * 300, *("x" * 3900 + str(i) for i in range(20))]
    for text in texts:
        await client.send_message(room, text)
    received = [event["text"] for event in client.pending_events() if event["type"] == "message"]
    while len(received) < len(texts):
        event = await client.next_event()
        if event["type"] == "message":
            received.append(event["text"])
    assert received == texts
    page = await client.request("history", room=room, limit=200)
    assert [message["text"] for message in page["messages"]] == texts


async def _stalled_reader(
    server: RunningServer, http: httpx.AsyncClient
) -> tuple[PapoClient, ClientConnection, str]:
    """A talker and a reader in one room; the reader's socket stops being read."""
    talker_s, reader_s = [await register_and_login(http, prefix=p) for p in "tr"]
    url = ws_url(server)
    talker = await PapoClient.connect(url, talker_s.access_token)
    room = (await talker.request("room.create", name="stall"))["id"]
    await talker.request("room.join", room=room)
    reader = await member_that_stops_reading(server, reader_s, room)
    # ~6 MB in batches the server publishes together: more than the kernel buffers hold,
    # so later frames wait in papo's outbox behind the ones already written.
    for batch in range(0, STALL_MESSAGES, 40):
        await asyncio.gather(
            *(
                talker.send_message(room, f"{n:04d}" + "z" * 15_000)
                for n in range(batch, batch + 40)
            )
        )
    hub = server.app.state.papo.realtime.hub
    stalled = next(c for c in hub.connections.values() if c.user_id == reader_s.user_id)
    assert stalled._writer is not None, "the socket filled up: frames took the queued path"
    return talker, reader, room


STALL_MESSAGES = 400


async def test_a_reader_that_stalls_gets_every_frame_in_order_when_it_reads_again(
    roomy_server: RunningServer, http: httpx.AsyncClient
) -> None:
    # The suite runs on uvloop, as `papo serve` does: its transports are not asyncio's.
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    talker, reader, _ = await _stalled_reader(roomy_server, http)
    seqs: list[int] = []
    texts: list[str] = []
    while len(texts) < STALL_MESSAGES:
        frame = msgspec.json.decode(await asyncio.wait_for(reader.recv(), 10))
        if frame["type"] == "message":
            seqs.append(frame["seq"])
            texts.append(frame["text"][:4])
    assert texts == [f"{n:04d}" for n in range(STALL_MESSAGES)]
    assert seqs == list(range(seqs[0], seqs[0] + STALL_MESSAGES))
    await reader.close()
    await talker.close()


async def test_stopping_papo_does_not_wait_for_a_reader_that_never_reads(
    base_settings: Settings,
) -> None:
    settings = _roomy(base_settings)
    async with serving(settings) as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            talker, reader, _ = await _stalled_reader(running, http)
        started = time.monotonic()
        await asyncio.wait_for(running.stop(), 30)
        # Drain (1 s here) plus the grace a writer gets to deliver its close frame.
        assert time.monotonic() - started < 12
    await talker.close()
    await reader.close()


async def test_only_ws_upgrades_and_not_while_draining(
    server: RunningServer, customer: Session
) -> None:
    headers = {"Authorization": f"Bearer {customer.access_token}"}
    elsewhere = ws_url(server).replace("/ws", "/chat")
    with pytest.raises(InvalidStatus) as caught:
        await connect(elsewhere, additional_headers=headers)
    assert caught.value.response.status_code == 404
    assert b"/ws" in caught.value.response.body
    hub = server.app.state.papo.realtime.hub
    hub.accepting = False  # what a drain sets first
    try:
        with pytest.raises(InvalidStatus) as caught:
            await connect(ws_url(server), additional_headers=headers)
        assert caught.value.response.status_code == 503
    finally:
        hub.accepting = True


async def test_fragmented_frames_are_joined_and_bad_utf8_closes_with_1007(
    server: RunningServer, customer: Session
) -> None:
    headers = {"Authorization": f"Bearer {customer.access_token}"}
    async with connect(ws_url(server), additional_headers=headers) as ws:
        assert msgspec.json.decode(await ws.recv())["type"] == "welcome"
        await ws.send(iter(['{"type": "pi', 'ng", "id": ', "7}"]))  # three frames
        reply = msgspec.json.decode(await ws.recv())
        assert (reply["type"], reply["id"]) == ("ok", 7)
        await ws.send(b'{"type": "ping", "id": "\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1007
    hub = server.app.state.papo.realtime.hub
    for _ in range(100):
        if not hub.connections:
            break
        await asyncio.sleep(0.02)
    assert not hub.connections, "the closed connection was detached"


async def test_a_peer_that_never_answers_pings_is_dropped(
    impatient_server: RunningServer, http: httpx.AsyncClient
) -> None:
    session = await register_and_login(http)
    reader, writer = await asyncio.open_connection("127.0.0.1", impatient_server.port)
    writer.write(
        b"GET /ws?token=" + session.access_token.encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    # Read everything without ever answering: a ping comes after 0.3 s, and with no
    # pong within another 0.3 s papo sends close 1011 and ends the connection.
    data = await asyncio.wait_for(reader.read(-1), 5)
    opcodes, offset = [], 0
    while offset + 2 <= len(data):
        opcode, length = data[offset] & 0x0F, data[offset + 1] & 0x7F
        head_size = 2
        if length == 126:
            (length,), head_size = struct.unpack("!H", data[offset + 2 : offset + 4]), 4
        opcodes.append((opcode, data[offset + head_size : offset + head_size + length]))
        offset += head_size + length
    assert [op for op, _ in opcodes][:1] == [0x1]  # the welcome
    assert 0x9 in [op for op, _ in opcodes], "papo pinged"
    close = [payload for op, payload in opcodes if op == 0x8]
    assert close
    assert struct.unpack("!H", close[0][:2])[0] == 1011
    writer.close()


async def test_a_peer_that_never_answers_papos_close_is_dropped_after_the_grace(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("papo.server.ws.CLOSE_GRACE_SECONDS", 0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    # A masked first frame that is no auth frame: papo answers with an error and its
    # close frame, then waits for the peer's close, which never comes.
    payload = b'{"type": "nothing"}'
    mask = b"\x01\x02\x03\x04"
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(-1), 5)  # until papo drops the socket
    finally:
        writer.close()
    waited = time.monotonic() - started
    assert b"token_missing" in data
    close_at = data.rfind(b"\x88")
    assert close_at > 0, "papo sent its close frame"
    assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == CloseCode.AUTH_FAILED
    assert 0.3 <= waited < 2, "dropped once the grace was over, not before"


@asynccontextmanager
async def _server_objects_left_in_cycles() -> AsyncIterator[Counter[str]]:
    """Counts, once the block is done, papo's and uvicorn's objects that what ran in it
    left in reference cycles: they wait for a full pass of the cycle collector."""
    left: Counter[str] = Counter()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # collected cycles stay in gc.garbage to be counted
    try:
        yield left
        gc.collect()
        names = (f"{type(o).__module__}.{type(o).__name__}" for o in gc.garbage)
        left.update(name for name in names if name.startswith(("uvicorn", "papo")))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_connections_leave_no_garbage_cycles_that_would_stop_the_loop(
    http: httpx.AsyncClient, server: RunningServer, connect: Connect
) -> None:
    """A full cycle collection stops every fan-out; what each connection leaves for it
    adds up to tens of milliseconds once a thousand clients have connected."""
    alice = await register_and_login(http, prefix="gc")
    first = await connect(alice)
    room = (await first.request("room.create", name="gc"))["id"]
    async with _server_objects_left_in_cycles() as left:
        for _ in range(20):
            client = await connect(alice)
            await client.request("room.join", room=room)
        await first.send_message(room, "hello")
    assert left == Counter(), "objects the server left in reference cycles"


async def test_closed_connections_are_freed_at_once_not_by_the_cycle_collector(
    http: httpx.AsyncClient, server: RunningServer, connect: Connect
) -> None:
    """What a closed connection leaves in reference cycles waits for a full pass of the
    cycle collector, which walks every open connection and stops the loop meanwhile:
    after a thousand clients drop, about 30,000 objects."""
    alice = await register_and_login(http, prefix="gc-closed")
    first = await connect(alice)
    room = (await first.request("room.create", name="gc-closed"))["id"]

    async def open_connections() -> int:
        return int(metric((await http.get("/metrics")).text, "papo_ws_connections"))

    async with _server_objects_left_in_cycles() as left:
        for _ in range(10):
            client = await connect(alice)
            await client.request("room.join", room=room)
            await client.close()  # a close frame, answered
            # The peer just goes, no close frame (a phone that lost its radio).
            raw = await connect_ws(f"{ws_url(server)}?token={alice.access_token}")
            await raw.recv()  # welcome
            join = {"type": "room.join", "id": 1, "room": room}
            await raw.send(msgspec.json.encode(join).decode())
            reply = msgspec.json.decode(await raw.recv())
            assert reply["type"] == "ok", reply
            raw.transport.abort()
        for _ in range(250):
            if await open_connections() == 1:
                break
            await asyncio.sleep(0.02)
        assert await open_connections() == 1
        await asyncio.sleep(0.1)  # the detach's last step runs after the gauge moves
    assert left == Counter(), "closed connections the server left in reference cycles"


ASYNCPG_TIMERS = re.compile(r"_StatementCache\.|PoolConnectionHolder\.")


async def test_open_connections_keep_no_loop_timer_of_their_own(
    http: httpx.AsyncClient, server: RunningServer
) -> None:
    """A connection's keepalive and token expiry are entries on the node's one timer:
    a loop timer each was about 1.3 KiB and eight objects for every full pass of the
    cycle collector to walk, per idle connection."""
    session = await register_and_login(http, prefix="timers")

    def loop_timers() -> int:
        # asyncpg keeps a timer per prepared statement and pooled database connection
        # (the pool's, not a client's: a query sent for the first time on one of the
        # pool's connections adds one); those are left out of the count.
        return sum(
            1
            for o in gc.get_objects()
            if type(o).__name__ == "TimerHandle" and not ASYNCPG_TIMERS.search(repr(o))
        )

    before = loop_timers()
    sockets = []
    try:
        for _ in range(20):  # raw sockets: no client library's timers in the count
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            sockets.append(writer)
            writer.write(
                b"GET /ws?token=" + session.access_token.encode() + b" HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            await reader.readexactly(2)  # the welcome frame has started to arrive
        hub = server.app.state.papo.realtime.hub
        assert len(hub.connections) >= 20
        # Each has its next ping and its token's expiry due, all on one timer.
        assert len(hub.deadlines) >= 40
        assert loop_timers() - before <= 2
    finally:
        for writer in sockets:
            writer.close()
