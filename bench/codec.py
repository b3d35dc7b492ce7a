"""Micro-benchmark behind papo's codec choice: msgspec Structs vs orjson + dataclasses.

Measures what the hot path does per frame: decode + validate one client frame, and
encode one server event. Run: .venv/bin/python -m bench.codec
"""

from __future__ import annotations

import dataclasses
import platform
import timeit
from typing import Any

import msgspec
import orjson

from papo.protocol import frames as f

FRAME = (
    b'{"type":"message.send","id":"m-1","room":"r_4f2a9c","text":"hello there, how is it going?",'
    b'"client_id":"c-8f1e2a"}'
)
decoder = msgspec.json.Decoder(f.MessageSend | f.Ping | f.Typing | f.RoomJoin)
encoder = msgspec.json.Encoder()
EVENT = f.MessageEvent(
    room="r_4f2a9c",
    seq=1234,
    ts=1764000000.123,
    sender=f.UserRef(id="u-1", name="Ana"),
    text="hello there, how is it going?",
    client_id="c-8f1e2a",
)


@dataclasses.dataclass(frozen=True, slots=True)
class SendDC:
    room: str
    text: str
    client_id: str
    id: str | int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SenderDC:
    id: str
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class MessageDC:
    room: str
    seq: int
    ts: float
    sender: SenderDC
    text: str
    client_id: str
    type: str = "message"


EVENT_DC = MessageDC(
    "r_4f2a9c",
    1234,
    1764000000.123,
    SenderDC("u-1", "Ana"),
    "hello there, how is it going?",
    "c-8f1e2a",
)


def orjson_decode(raw: bytes) -> SendDC:
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("type") != "message.send":
        raise ValueError("type")
    for name in ("room", "text", "client_id"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(name)
    if len(data["text"]) > 16000 or len(data["client_id"]) > 64:
        raise ValueError("length")
    unknown = set(data) - {"type", "id", "room", "text", "client_id"}
    if unknown:
        raise ValueError(unknown)
    return SendDC(data["room"], data["text"], data["client_id"], data.get("id"))


def main(number: int = 200_000) -> None:
    rows = {
        "decode+validate: msgspec Struct": lambda: decoder.decode(FRAME),
        "decode+validate: orjson + dataclass": lambda: orjson_decode(FRAME),
        "encode event: msgspec Struct": lambda: encoder.encode(EVENT),
        "encode event: orjson + dataclass": lambda: orjson.dumps(EVENT_DC),
    }
    print(
        f"python {platform.python_version()}, msgspec {msgspec.__version__}, "
        f"orjson {orjson.__version__}, {number} iterations, best of 5"
    )
    print(f"| {'operation':<40} | ns/op |")
    print(f"|{'-' * 42}|------:|")
    for name, fn in rows.items():
        best = min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e9
        print(f"| {name:<40} | {best:5.0f} |")


if __name__ == "__main__":
    main()
