"""MongoDB client construction through PyMongo's async API (``AsyncMongoClient``)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.uri_parser import parse_uri

DEFAULT_DATABASE = "papo"


def connect_mongo(url: str, *, timeout: float = 5.0) -> AsyncMongoClient[dict[str, Any]]:
    """A lazily connecting client; server selection fails after ``timeout`` seconds."""
    return AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000),
        tz_aware=True,
    )


def database_name(url: str) -> str:
    return parse_uri(url).get("database") or DEFAULT_DATABASE


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.admin.command("ping")
