"""MongoDB client construction through PyMongo's async API (``AsyncMongoClient``)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.uri_parser import parse_uri

DEFAULT_DATABASE = "papo"


def connect_mongo(url: str, *, timeout: float = 5.0) -> AsyncMongoClient[dict[str, Any]]:
    """A lazily connecting client; server selection fails after ``timeout`` seconds.

    Without retryable writes: papo's history writes are idempotent by themselves and
    retried by ``MongoHistory``, whereas a retryable write makes the server keep a record
    of every write for 30 minutes. On the embedded MongoDB-wire server those records
    slowed every write from 0.8 ms to 14 ms once 10,000 had piled up (one busy minute of
    chat); it also lets papo use stores that do not offer retryable writes.
    """
    return AsyncMongoClient(
        url,
        serverSelectionTimeoutMS=int(timeout * 1000),
        connectTimeoutMS=int(timeout * 1000),
        retryWrites=False,
        tz_aware=True,
    )


def database_name(url: str) -> str:
    return parse_uri(url).get("database") or DEFAULT_DATABASE


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> None:
    await client.admin.command("ping")
