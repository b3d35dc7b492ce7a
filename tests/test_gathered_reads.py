"""Reads asked together go to the database together, and each answer stays fresh."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import pytest

from papo.client import PapoClient, PapoClientError
from papo.persistence.gathered import GatheredReads
from papo.server.runner import RunningServer
from tests.conftest import Session, register_and_login, ws_url


class Table:
    """A keyed table the reads query: it records each query's keys, and a query can be
    held open until the test lets it answer."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows
        self.queries: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.failure: Exception | None = None

    async def fetch(self, keys: Sequence[str]) -> Mapping[str, int]:
        self.queries.append(list(keys))
        if self.hold is not None:
            await self.hold.wait()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        return {key: self.rows[key] for key in keys if key in self.rows}


async def test_reads_asked_in_one_turn_share_one_query_and_each_gets_its_own_answer() -> None:
    table = Table({"a": 1, "b": 2, "c": 3})
    reads = GatheredReads(table.fetch)
    answers = await asyncio.gather(*(reads.get(key) for key in ["a", "b", "missing", "c", "a"]))
    assert answers == [1, 2, None, 3, 1]
    assert table.queries == [["a", "b", "missing", "c"]], "one query, each key once"


async def test_reads_asked_while_a_query_is_out_go_together_in_the_next() -> None:
    table = Table({"a": 1, "b": 2, "c": 3})
    table.hold = asyncio.Event()
    reads = GatheredReads(table.fetch)
    first = asyncio.ensure_future(reads.get("a"))
    await asyncio.sleep(0.01)
    assert table.queries == [["a"]], "a lone read goes out at once"
    later = [asyncio.ensure_future(reads.get(key)) for key in ["b", "c"]]
    await asyncio.sleep(0.01)
    assert table.queries == [["a"]], "the later reads wait for the query that is out"
    table.hold.set()
    assert await asyncio.gather(first, *later) == [1, 2, 3]
    assert table.queries == [["a"], ["b", "c"]]


async def test_a_read_asked_after_its_key_went_out_sees_what_changed_meanwhile() -> None:
    """The freshness that lets a disabled account be refused at its next connect."""
    table = Table({"alice": 1})
    table.hold = asyncio.Event()
    reads = GatheredReads(table.fetch)
    before = asyncio.ensure_future(reads.get("alice"))
    await asyncio.sleep(0.01)
    table.rows["alice"] = 2  # changed after the first query went out
    after = asyncio.ensure_future(reads.get("alice"))
    table.hold.set()
    assert await before == 2  # this table answers with what it holds when released
    assert await after == 2
    assert table.queries == [["alice"], ["alice"]], "the later read did not share the older query"


async def test_no_query_holds_more_than_the_batch() -> None:
    table = Table({str(n): n for n in range(7)})
    reads = GatheredReads(table.fetch, batch=3)
    answers = await asyncio.gather(*(reads.get(str(n)) for n in range(7)))
    assert answers == list(range(7))
    assert [len(keys) for keys in table.queries] == [3, 3, 1]
    with pytest.raises(ValueError, match="at least 1"):
        GatheredReads(table.fetch, batch=0)


async def test_a_caller_that_leaves_does_not_take_the_answer_from_the_others() -> None:
    table = Table({"a": 1})
    table.hold = asyncio.Event()
    reads = GatheredReads(table.fetch)
    leaving = asyncio.ensure_future(reads.get("a"))
    staying = asyncio.ensure_future(reads.get("a"))
    await asyncio.sleep(0.01)
    leaving.cancel()
    table.hold.set()
    assert await staying == 1
    assert leaving.cancelled()
    assert await reads.get("a") == 1, "the reads go on"


async def test_a_failed_query_fails_its_callers_only_and_reports_nothing_unseen() -> None:
    table = Table({"a": 1, "b": 2})
    table.hold = asyncio.Event()
    table.failure = ConnectionError("database went away")
    reads = GatheredReads(table.fetch)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        failing = [asyncio.ensure_future(reads.get("a")) for _ in range(2)]
        left = asyncio.ensure_future(reads.get("gone"))
        await asyncio.sleep(0.01)
        next_one = asyncio.ensure_future(reads.get("b"))
        left.cancel()  # its caller leaves before the failure arrives
        table.hold.set()
        for caller in failing:
            with pytest.raises(ConnectionError, match="went away"):
                await caller
        assert await next_one == 2, "the query after a failure is answered"
        del left
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert reported == [], "an error nobody waited for is not reported as never retrieved"


async def test_callers_are_not_left_waiting_when_the_reads_stop() -> None:
    """A stopping node cancels every task; callers of a cancelled read and those queued
    behind it end too instead of waiting for ever."""
    table = Table({"a": 1, "b": 2})
    table.hold = asyncio.Event()
    reads = GatheredReads(table.fetch)
    out = asyncio.ensure_future(reads.get("a"))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(reads.get("b"))
    await asyncio.sleep(0.01)
    (reader,) = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "").endswith("_read_waiting")
    ]
    reader.cancel()
    _done, pending = await asyncio.wait([out, queued], timeout=1)
    assert not pending
    assert out.cancelled()
    assert queued.cancelled()
    table.hold.set()
    assert await reads.get("b") == 2, "a later read starts a new query"


async def test_many_clients_connecting_at_once_each_get_their_own_account(
    http: httpx.AsyncClient, server: RunningServer, admin: Session
) -> None:
    """Connects of several accounts, interleaved, read their accounts gathered: each client
    is welcomed as its own user, and a disabled account is refused at its next connect."""
    people = [await register_and_login(http, prefix=f"crowd{n}") for n in range(4)]
    clients = await asyncio.gather(
        *(PapoClient.connect(ws_url(server), people[n % 4].access_token) for n in range(40))
    )
    try:
        assert [c.user_id for c in clients] == [people[n % 4].user_id for n in range(40)]
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    disabled = await http.patch(
        f"/api/users/{people[0].user_id}", json={"disabled": True}, headers=admin.headers
    )
    assert disabled.status_code == 200, disabled.text
    attempts = await asyncio.gather(
        *(PapoClient.connect(ws_url(server), p.access_token) for p in people),
        return_exceptions=True,
    )
    assert isinstance(attempts[0], PapoClientError)
    assert attempts[0].code == "account_disabled"
    assert [a.user_id for a in attempts[1:] if isinstance(a, PapoClient)] == [
        p.user_id for p in people[1:]
    ]
    await asyncio.gather(*(a.close() for a in attempts if isinstance(a, PapoClient)))
