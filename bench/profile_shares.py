"""Where a py-spy profile of ``papo serve`` spent its time, grouped the way
docs/benchmarks.md reports it: ``python -m bench.profile_shares papo-s4.prof``.

The input is ``py-spy record --native --format raw`` output: one line per distinct
stack, frames joined by ``;``, then a count. A sample goes to the first group whose
marker appears in its stack, so the order of ``GROUPS`` decides ties (a `send` made by
the MongoDB client counts as the client's, not as fan-out's). Waiting (the loop's
``epoll``, idle worker threads) is counted apart and left out of the shares: py-spy
cannot tell a thread blocked in native code from one working there.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

WAITING = "waiting (epoll, idle threads)"
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    (WAITING, ("epoll_pwait", "epoll_wait", "_worker (concurrent")),
    (
        "papo's MongoDB client writing history",
        ("MongoHistory", "pymongo", "WriteBehind._store_all", "PyMongoProtocol"),
    ),
    (
        "membership renewals against PostgreSQL",
        ("CachedRoomStore", "PostgresRoomStore", "asyncpg", "PoolConnectionHolder"),
    ),
    ("`send` syscalls: fan-out frames and acks", (";write (libc", ";writev (libc")),
    (
        "papo's numbering and fan-out (Python)",
        (
            "WriteBehind._number",
            "Fanout.",
            "Sequencer.",
            "Connection.push",
            "Hub._publish_messages",
            "MemoryBroker",
            "try_write",
            "text_frame",
        ),
    ),
    ("acks", ("_answer_send", "WriteBehind._settle", "Session._reply")),
    # Frames are handled inside ``data_received``: handling goes before reading.
    (
        "handling frames (rate limit, decode, validation, membership, submit)",
        ("Session.", "_handle_inbox", "Chat.", "Registry", "WebSocketProtocol._start"),
    ),
    (
        "reading frames (`recv`, `websockets`' parser)",
        ("data_received", "Protocol.parse", "Protocol.receive_data", "Frame.parse", ";read (libc"),
    ),
    ("the cycle collector", ("gc_collect",)),
]
OTHER = "other"


def group_of(stack: str) -> str:
    for name, markers in GROUPS:
        if any(marker in stack for marker in markers):
            return name
    return OTHER


def shares(lines: Iterable[str]) -> tuple[Counter[str], int, float]:
    """Samples per group, the total, and the share of busy samples updating Prometheus."""
    counts: Counter[str] = Counter()
    metrics = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(count)
        counts[group_of(stack)] += n
        if "prometheus_client" in stack:
            metrics += n
    total = sum(counts.values())
    busy = total - counts[WAITING]
    return counts, total, metrics / busy if busy else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path, help="py-spy raw output (--format raw)")
    options = parser.parse_args()
    counts, total, metrics = shares(options.profile.read_text().splitlines())
    busy = total - counts[WAITING]
    if not busy:
        print("no busy samples", file=sys.stderr)
        return 1
    print(f"{total} samples, {busy} busy (waiting left out: {counts[WAITING]})")
    print("| where | share of busy samples |")
    print("|---|---|")
    for name, count in counts.most_common():
        if name != WAITING:
            print(f"| {name} | {count / busy * 100:.1f} % |")
    print(f"(Prometheus updates, inside the groups above: {metrics * 100:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
