"""The full frame registry without any I/O: for generating and checking the docs."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from papo.hub.connection import Connection
from papo.protocol.docs import json_schema, render_markdown
from papo.protocol.frames import SERVER_EVENTS
from papo.protocol.registry import Registry
from papo.server.config import Settings
from papo.server.realtime import build_realtime
from papo.server.resources import Resources


def build_realtime_registry() -> Registry[Connection]:
    return build_realtime(Settings(), Resources(), None, CollectorRegistry()).registry


def documents() -> dict[str, str]:
    """File name (under docs/) -> its generated content."""
    specs = list(build_realtime_registry())
    return {
        "protocol.md": render_markdown(specs, SERVER_EVENTS),
        "protocol.schema.json": orjson.dumps(
            json_schema(specs, SERVER_EVENTS), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode()
        + "\n",
    }


def write(docs_dir: Path) -> list[Path]:
    written = []
    for name, content in documents().items():
        path = docs_dir / name
        path.write_text(content)
        written.append(path)
    return written


def stale(docs_dir: Path) -> list[str]:
    return [
        name
        for name, content in documents().items()
        if not (docs_dir / name).exists() or (docs_dir / name).read_text() != content
    ]
