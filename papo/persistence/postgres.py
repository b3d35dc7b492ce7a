"""The asyncpg pool.

``min_size=0`` keeps start-up free of I/O: an unreachable database shows up on
``/readyz`` and in request errors, never as a crash of the whole node.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

Pool = asyncpg.Pool


async def _init_connection(connection: Any) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            encoder=lambda value: orjson.dumps(value).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(url: str, *, max_size: int = 10, connect_timeout: float = 5.0) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=connect_timeout,
        init=_init_connection,
        max_inactive_connection_lifetime=300.0,
    )
    return pool


async def ping(pool: Pool) -> None:
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")
