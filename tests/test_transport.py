"""The fan-out fast path: frames written straight to the socket, intact at every size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from papo.client import PapoClient
from papo.server.runner import RunningServer
from tests.conftest import Session

Connect = Callable[..., Awaitable[PapoClient]]


async def test_papo_writes_fan_out_frames_straight_to_the_socket(
    connect: Connect, customer: Session, server: RunningServer
) -> None:
    client = await connect(customer)
    await client.request("ping")
    hub = server.app.state.papo.realtime.hub
    (connection,) = hub.connections.values()
    # Under papo's uvicorn configuration the transport found uvicorn's protocol; if a
    # uvicorn upgrade hides it, every frame silently takes the slower ASGI path.
    assert connection.transport._protocol is not None


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
