"""The message writer's group commit: what senders and rooms see from it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from papo.hub.history import Draft, Stored
from papo.hub.history_memory import MemoryHistory
from papo.hub.metrics import HubMetrics
from papo.hub.writer import MessageWriter
from papo.persistence.history_mongo import MongoHistory
from tests.conftest import unanswering_mongo


def _sample(metrics: HubMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return value or 0.0


def _draft(room: str, client_id: str, sender: str = "u1") -> Draft:
    return Draft(room, sender, "U", f"text {client_id}", client_id)


async def test_sends_from_many_rooms_share_one_durable_write() -> None:
    metrics = HubMetrics(CollectorRegistry())
    published: list[list[tuple[str, int]]] = []

    async def publish(messages: Sequence[Stored]) -> None:
        published.append([(m.room, m.seq) for m in messages])

    writer = MessageWriter(MemoryHistory(), publish, metrics)
    drafts = [_draft(room, str(n)) for n in range(3) for room in ("a", "b", "c")]
    futures = [writer.submit(draft) for draft in drafts]  # all in one loop turn
    stored = await asyncio.gather(*futures)

    assert _sample(metrics, "papo_history_write_batch_size_count") == 1, "one write for all"
    assert _sample(metrics, "papo_history_write_batch_size_sum") == 9
    assert _sample(metrics, "papo_history_write_seconds_count") == 1
    assert [(m.room, m.seq) for m in stored] == [
        (room, n + 1) for n in range(3) for room in ("a", "b", "c")
    ], "each sender gets its own room's next number, in the order sent"
    (batch,) = published
    for room in ("a", "b", "c"):
        assert [seq for r, seq in batch if r == room] == [1, 2, 3], "published in order"


async def test_sends_while_a_write_is_in_flight_go_into_the_next_one() -> None:
    metrics = HubMetrics(CollectorRegistry())
    published: list[Stored] = []

    async def publish(messages: Sequence[Stored]) -> None:
        published.extend(messages)

    writer = MessageWriter(MemoryHistory(), publish, metrics)
    first = writer.submit(_draft("a", "1"))
    await asyncio.sleep(0)  # the first write has started
    later = [writer.submit(_draft(room, "2")) for room in ("a", "b")]
    await asyncio.gather(first, *later)
    assert _sample(metrics, "papo_history_write_batch_size_count") == 2
    assert [(m.room, m.seq) for m in published] == [("a", 1), ("a", 2), ("b", 1)]


async def test_a_failed_write_refuses_every_send_in_it_and_publishes_nothing() -> None:
    metrics = HubMetrics(CollectorRegistry())
    published: list[Stored] = []

    async def publish(messages: Sequence[Stored]) -> None:
        published.extend(messages)

    async with unanswering_mongo() as client:
        writer = MessageWriter(MongoHistory(client, "nowhere"), publish, metrics)
        futures = [writer.submit(_draft(room, "1")) for room in ("a", "b")]
        results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(result, Exception) for result in results), "no send acknowledged"
    assert published == []
    assert _sample(metrics, "papo_messages_stored_total") == 0


async def test_a_failed_publish_refuses_the_sends_it_carried() -> None:
    metrics = HubMetrics(CollectorRegistry())

    async def publish(messages: Sequence[Stored]) -> None:
        raise ConnectionError("broker unreachable")

    writer = MessageWriter(MemoryHistory(), publish, metrics)
    with pytest.raises(ConnectionError):
        await writer.submit(_draft("a", "1"))


async def test_drain_writes_what_is_queued_then_refuses_new_sends() -> None:
    metrics = HubMetrics(CollectorRegistry())
    published: list[Stored] = []

    async def publish(messages: Sequence[Stored]) -> None:
        await asyncio.sleep(0.05)  # a slow broker: drain must wait for it
        published.extend(messages)

    writer = MessageWriter(MemoryHistory(), publish, metrics)
    futures = [writer.submit(_draft("a", str(n))) for n in range(5)]
    await writer.drain(5.0)
    assert [m.seq for m in published] == [1, 2, 3, 4, 5]
    assert all(future.done() and not future.exception() for future in futures)
    with pytest.raises(RuntimeError, match="shutting down"):
        writer.submit(_draft("a", "late"))


async def test_drain_gives_up_at_its_deadline_and_refuses_what_still_waits() -> None:
    metrics = HubMetrics(CollectorRegistry())
    release = asyncio.Event()

    async def publish(messages: Sequence[Stored]) -> None:
        await release.wait()  # a broker that never answers

    writer = MessageWriter(MemoryHistory(), publish, metrics)
    in_flight = writer.submit(_draft("a", "1"))
    await asyncio.sleep(0)  # its write has started
    waiting = writer.submit(_draft("a", "2"))
    await asyncio.wait_for(writer.drain(0.1), 5)
    for send in (in_flight, waiting):  # neither is acknowledged; both senders are told
        with pytest.raises(RuntimeError, match="shutting down"):
            await send
    assert _sample(metrics, "papo_messages_stored_total") == 1  # stored, never acknowledged
