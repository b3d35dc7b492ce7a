"""The history store's own write latency, without papo in the way.

papo acknowledges and fans out a message only once its history write is journaled, so
the store's write latency is in every message's latency. This measures the store alone
(the MongoDB-wire server ``papo dev`` embeds): journaled one-document inserts, as
papo's writer makes when rooms are quiet, on a fresh server and again after many
writes, with and without PyMongo's retryable writes. It is why papo's MongoDB client
does not ask for retryable writes (docs/benchmarks-log.md, "Changes measured").

Then papo's own history write (``MongoHistory.append``, as the group commit calls it)
with batches of 1 to 100 drafts over 100 rooms: what one write costs and what each
message costs the store, i.e. how many messages per second it can take at most.

Last, the store's own CPU per message stored (read from ``/proc`` for the store's
process) for each index layout: papo's (the draft key as ``_id``, one index beside it)
and that of a collection written by earlier papo, which keeps its draft-key index
(docs/operations.md). Every index is work in every insert; this is what the second
one costs, and, as a reference, what the store takes with no index but ``_id`` (numbers
are then unchecked: not a layout papo runs).

    .venv/bin/python -m bench.history_store [--writes 11000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.write_concern import WriteConcern

from bench.run import cpu_seconds
from papo.hub.history import Draft
from papo.persistence.history_mongo import LEGACY_KEY_INDEX, NUMBER_INDEX, MongoHistory
from papo.persistence.mongo import connect_mongo
from papo.server.embedded import EmbeddedServices

SAMPLES = 200
BATCH_SIZES = (1, 5, 20, 100)
BATCHES = 60
CPU_BATCH = 10  # drafts per write, as one node's group commit makes at 1000 messages/s
CPU_WRITES = 400


async def _latencies(messages: AsyncCollection[dict[str, Any]]) -> str:
    taken = []
    for n in range(SAMPLES):
        started = time.perf_counter()
        await messages.insert_many([{"room": "bench", "n": n, "text": "x" * 40}])
        taken.append(1000 * (time.perf_counter() - started))
    taken.sort()
    return f"{statistics.mean(taken):.2f} | {taken[int(0.99 * SAMPLES)]:.2f}"


async def _measure(url: str, retry_writes: bool, writes: int) -> list[str]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, retryWrites=retry_writes)
    database = client.get_database("bench", write_concern=WriteConcern(w=1, j=True))
    messages = database[f"retry_{retry_writes}"]
    try:
        fresh = await _latencies(messages)
        for start in range(0, writes, 100):  # a busy node: many writes in a short time
            batch = range(start, min(start + 100, writes))
            await asyncio.gather(*(messages.insert_one({"filler": n}) for n in batch))
        busy = await _latencies(messages)
    finally:
        await client.close()
    label = "on" if retry_writes else "off"
    return [
        f"| {label} | fresh | {fresh} |",
        f"| {label} | after {writes} writes | {busy} |",
    ]


async def _batches(url: str) -> list[str]:
    client = connect_mongo(url)
    history = MongoHistory(client, "bench_batches")
    rows = ["| drafts per write | mean ms | p99 ms | ms per message | messages/s at most |"]
    rows.append("|---|---|---|---|---|")
    sent = 0
    try:
        await history.prepare()
        for size in BATCH_SIZES:
            taken = []
            for _ in range(BATCHES):
                drafts = []
                for _ in range(size):
                    sent += 1
                    drafts.append(Draft(f"room-{sent % 100}", "u1", "U", "hello " * 8, str(sent)))
                started = time.perf_counter()
                await history.append(drafts)
                taken.append(1000 * (time.perf_counter() - started))
            taken.sort()
            mean = statistics.mean(taken)
            rows.append(
                f"| {size} | {mean:.2f} | {taken[int(0.99 * BATCHES)]:.2f} "
                f"| {mean / size:.2f} | {1000 * size / mean:.0f} |"
            )
    finally:
        await client.close()
    return rows


async def _write_batches(history: MongoHistory, writes: int, *, first: int) -> None:
    """``writes`` appends of ``CPU_BATCH`` drafts over 100 rooms, numbered from ``first``."""
    for write in range(first, first + writes):
        drafts = []
        for n in range(write * CPU_BATCH, (write + 1) * CPU_BATCH):
            drafts.append(Draft(f"room-{n % 100}", "u1", "U", "hello " * 8, str(n)))
        await history.append(drafts)


async def _store_cpu(url: str, pid: int) -> list[str]:
    client = connect_mongo(url)
    rows = ["| index layout | indexes per message | store CPU ms per message |", "|---|---|---|"]
    layouts = (
        ("draft key as _id (papo)", "papo"),
        (f"with earlier papo's {LEGACY_KEY_INDEX} index", "legacy"),
        (f"only _id: no {NUMBER_INDEX} (a reference, not a layout papo runs)", "bare"),
    )
    try:
        for label, layout in layouts:
            database = f"bench_cpu_{layout}"
            messages = client[database]["messages"]
            if layout == "legacy":
                await messages.create_index(
                    [("room", 1), ("sender_id", 1), ("client_id", 1)],
                    unique=True,
                    name=LEGACY_KEY_INDEX,
                )
            history = MongoHistory(client, database)
            await history.prepare()
            if layout == "bare":
                # One writer numbers every room here, so nothing races for a number;
                # what is left is the store's cost of a document and its _id.
                await messages.drop_index(NUMBER_INDEX)
            indexes = len(await messages.index_information())
            await _write_batches(history, CPU_WRITES // 10, first=0)  # warm up
            before = cpu_seconds(pid)
            await _write_batches(history, CPU_WRITES, first=CPU_WRITES // 10)
            used = cpu_seconds(pid) - before
            rows.append(f"| {label} | {indexes} | {1000 * used / (CPU_WRITES * CPU_BATCH):.3f} |")
    finally:
        await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=11_000)
    options = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="papo-store-"))
    try:
        with EmbeddedServices(data_dir, ["mongo"], durable=True) as engines:
            url = engines.urls["mongo"]
            rows = ["| retryable writes | when | mean ms | p99 ms |", "|---|---|---|---|"]
            for retry_writes in (True, False):
                rows += asyncio.run(_measure(url, retry_writes, options.writes))
            batch_rows = asyncio.run(_batches(url))
            cpu_rows = asyncio.run(_store_cpu(url, engines.pids[0]))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print("journaled one-document inserts, one at a time,", SAMPLES, "samples each")
    print("\n".join(rows))
    print()
    print("papo's history write (MongoHistory.append), journaled,", BATCHES, "writes per size")
    print("\n".join(batch_rows))
    print()
    print(f"the store's CPU per message, {CPU_WRITES} writes of {CPU_BATCH} drafts per layout")
    print("\n".join(cpu_rows))


if __name__ == "__main__":
    main()
