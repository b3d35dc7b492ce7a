"""Reads by key that arrive together go to the database together.

A node's clients reconnect together: after a restart, a network blip or a deploy,
thousands of them open a socket within a second, and each one's token names an
account that papo reads again (a disabled account or a changed role takes effect at
the next connect, never later). One query per connect costs PostgreSQL a round trip
and, on a machine it shares with papo, a switch to its backend and back each time;
measured, reading the account made up about a third of the cost of a connect.

``GatheredReads`` sends the first read at once (on the loop's next turn, with whatever
else was asked in the same turn) and keeps the reads asked while that query is out for
the next one, up to ``batch`` keys each. A quiet node reads as before, one query per
read; a busy one reads as fast as the database answers, many keys per query. Nothing
is remembered between queries: each answer is at least as fresh as the read that
asked for it, so the gathering changes how many queries there are, not what they see.

DataLoader (and its Python port ``aiodataloader``) batch the same way, per loop turn,
with a cache in front that papo would have to turn off; the part papo needs is this
module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BATCH = 500  # keys in one query at most


class GatheredReads(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        batch: int = BATCH,
    ) -> None:
        """``fetch`` answers a list of distinct keys with what it found for them; a key it
        leaves out reads as ``None``."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._fetch = fetch
        self._batch = batch
        self._waiting: dict[K, asyncio.Future[V | None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        """What ``fetch`` finds for ``key``, from a query sent after this call began.

        Callers asking for the same key while it waits share one answer. A caller that
        is cancelled (its client left) leaves the read to the others."""
        answer = self._waiting.get(key)
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = self._waiting[key] = loop.create_future()
            if self._reader is None:
                self._reader = loop.create_task(self._read_waiting())
        return await asyncio.shield(answer)

    async def _read_waiting(self) -> None:
        try:
            while self._waiting:
                keys = list(islice(self._waiting, self._batch))
                answers = [self._waiting.pop(key) for key in keys]
                try:
                    found = await self._fetch(keys)
                except BaseException as exc:
                    for answer in answers:
                        _settle_with_error(answer, exc)
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the node is stopping
                    continue
                for key, answer in zip(keys, answers, strict=True):
                    if not answer.done():
                        answer.set_result(found.get(key))
        finally:
            self._reader = None
            for answer in self._waiting.values():  # only left when the reader was cancelled
                _settle_with_error(answer, asyncio.CancelledError())
            self._waiting.clear()


def _settle_with_error(answer: asyncio.Future[V | None], exc: BaseException) -> None:
    if answer.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        answer.cancel()
        return
    answer.set_exception(exc)
    # Every caller that still waits gets the error; marking it retrieved keeps a read
    # whose callers all left from being reported as "never retrieved".
    answer.exception()
