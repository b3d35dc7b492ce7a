"""Shared history reads: readers that wait together cost one query, and each still gets
exactly what its own query would have returned."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pymongo import AsyncMongoClient

from papo.hub.history import Draft, Stored
from papo.hub.history_reads import SHARED_PAGE, SharedReads
from papo.hub.metrics import HubMetrics
from papo.persistence.history_mongo import MongoHistory
from papo.server.config import Settings
from tests.conftest import unanswering_mongo


@pytest.fixture
async def store(base_settings: Settings) -> AsyncIterator[MongoHistory]:
    assert base_settings.urls.mongo
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(base_settings.urls.mongo)
    history = MongoHistory(client, f"reads_{secrets.token_hex(4)}")
    await history.prepare()
    yield history
    await client.close()


def _queries(metrics: HubMetrics, read: str) -> float:
    return metrics.registry.get_sample_value("papo_history_queries_total", {"read": read}) or 0


def _reads(metrics: HubMetrics, read: str) -> float:
    return metrics.registry.get_sample_value("papo_history_reads_total", {"read": read}) or 0


async def _fill(history: MongoHistory, room: str, count: int) -> None:
    await history.append([Draft(room, "u1", "U", f"m{n}", f"{room}-{n}") for n in range(count)])


def _seqs(messages: list[Stored]) -> list[int]:
    return [m.seq for m in messages]


async def test_concurrent_readers_of_a_room_share_one_query_and_get_their_own_window(
    store: MongoHistory,
) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    await _fill(store, "r", 120)
    asked = [(after, limit) for after in range(0, 120, 5) for limit in (1, 7, 50)]
    asked += [(119, 10), (120, 10), (500, 3)]  # the newest, past the end, beyond it

    got = await asyncio.gather(*(reads.after("r", after, limit) for after, limit in asked))

    for (after, limit), page in zip(asked, got, strict=True):
        alone = await store.after("r", after, limit)
        assert _seqs(page) == _seqs(alone), f"after {after} limit {limit}"
        assert [m.text for m in page] == [m.text for m in alone]
    assert _reads(metrics, "after") == len(asked)
    assert _queries(metrics, "after") == 1, "all readers waited together: one query"


async def test_a_reader_beyond_the_shared_page_is_answered_by_the_next_query(
    store: MongoHistory,
) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    total = SHARED_PAGE + 50
    await _fill(store, "long", total)

    near, far = await asyncio.gather(
        reads.after("long", 0, 5), reads.after("long", SHARED_PAGE + 10, 20)
    )

    assert _seqs(near) == [1, 2, 3, 4, 5]
    assert _seqs(far) == list(range(SHARED_PAGE + 11, SHARED_PAGE + 31))
    assert _queries(metrics, "after") == 2, "the far reader needed a query of its own"


async def test_a_reader_never_joins_a_query_that_started_before_it_asked(
    store: MongoHistory,
) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    await _fill(store, "live", 3)

    early = asyncio.create_task(reads.after("live", 0, 100))
    await asyncio.sleep(0)  # the first query is in flight
    await store.append([Draft("live", "u1", "U", "late", "late")])
    late = await reads.after("live", 0, 100)

    assert _seqs(late) == [1, 2, 3, 4], "stored before the reader asked, so it is seen"
    assert _seqs(await early)[:3] == [1, 2, 3]
    assert _queries(metrics, "after") == 2


async def test_joiners_asking_for_the_same_page_share_one_query(store: MongoHistory) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    await _fill(store, "r", 80)
    newest: list[tuple[int | None, int]] = [(None, limit) for limit in (1, 20, 50, 200)]
    asked = newest * 10 + [(40, 5), (40, 50), (3, 10)]  # older pages: one query each

    got = await asyncio.gather(*(reads.before("r", seq, limit) for seq, limit in asked))

    for (seq, limit), page in zip(asked, got, strict=True):
        assert _seqs(page) == _seqs(await store.before("r", seq, limit)), f"{seq} {limit}"
    assert _seqs(got[1]) == list(range(61, 81)), "the newest 20, oldest first"
    assert _reads(metrics, "before") == len(asked)
    assert _queries(metrics, "before") == 3, "one query per page: newest, below 40, below 3"


async def test_last_seqs_of_many_readers_are_one_query_per_room(store: MongoHistory) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    for room, count in (("a", 3), ("b", 5)):
        await _fill(store, room, count)

    asked = [["a"], ["b", "a"], ["c"], ["a", "c"]] * 25
    got = await asyncio.gather(*(reads.last_seqs(rooms) for rooms in asked))

    expected = {"a": 3, "b": 5, "c": 0}
    assert got == [{room: expected[room] for room in rooms} for rooms in asked]
    assert _reads(metrics, "last_seq") == sum(len(rooms) for rooms in asked)
    assert _queries(metrics, "last_seq") == 3, "one query per distinct room"


async def test_a_reader_that_gives_up_does_not_disturb_the_others(store: MongoHistory) -> None:
    metrics = HubMetrics(CollectorRegistry())
    reads = SharedReads(store, metrics)
    await _fill(store, "r", 10)

    leaving = asyncio.create_task(reads.after("r", 0, 5))
    staying = asyncio.create_task(reads.after("r", 5, 5))
    await asyncio.sleep(0)
    leaving.cancel()

    assert _seqs(await staying) == [6, 7, 8, 9, 10]
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert _seqs(await reads.after("r", 8, 5)) == [9, 10], "later reads still work"


async def test_a_store_that_fails_fails_every_reader_waiting_on_it() -> None:
    metrics = HubMetrics(CollectorRegistry())
    async with unanswering_mongo() as client:
        reads = SharedReads(MongoHistory(client, "nowhere"), metrics)
        results = await asyncio.gather(
            reads.after("r", 0, 5),
            reads.after("r", 3, 5),
            reads.last_seqs(["r"]),
            return_exceptions=True,
        )
    assert all(isinstance(result, Exception) for result in results), results


async def test_stopping_cancels_every_reader_instead_of_leaving_it_waiting() -> None:
    metrics = HubMetrics(CollectorRegistry())
    async with unanswering_mongo() as client:
        reads = SharedReads(MongoHistory(client, "nowhere"), metrics)
        in_flight = asyncio.create_task(reads.after("r", 0, 5))
        await asyncio.sleep(0.01)  # its query is waiting on the store
        queued = [
            asyncio.create_task(reads.after("r", 2, 5)),
            asyncio.create_task(reads.before("r", None, 5)),
            asyncio.create_task(reads.last_seqs(["r"])),
        ]
        await asyncio.sleep(0)
        await reads.close()
        results = await asyncio.wait_for(
            asyncio.gather(in_flight, *queued, return_exceptions=True), timeout=5
        )
    assert all(isinstance(result, asyncio.CancelledError) for result in results), results
