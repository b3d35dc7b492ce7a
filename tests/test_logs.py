"""Logs are JSON lines under serve and readable lines under dev, each with its id."""

from __future__ import annotations

import logging

import orjson

from papo.server.logs import JsonFormatter, TextFormatter, _ContextFilter, context_id


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("papo.test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    _ContextFilter().filter(record)
    return record


def test_json_lines_carry_the_request_id_and_extras() -> None:
    token = context_id.set("req_abc")
    try:
        line = JsonFormatter().format(_record("hello", status=200))
    finally:
        context_id.reset(token)
    entry = orjson.loads(line)
    assert entry["msg"] == "hello"
    assert entry["id"] == "req_abc"
    assert entry["status"] == 200
    assert entry["level"] == "info"
    assert entry["ts"].endswith("Z")


def test_text_lines_are_readable() -> None:
    token = context_id.set("conn_1")
    try:
        line = TextFormatter().format(_record("joined", room="lobby", color_message="x"))
    finally:
        context_id.reset(token)
    assert "[conn_1] joined" in line
    assert "room=lobby" in line
    assert "color_message" not in line
