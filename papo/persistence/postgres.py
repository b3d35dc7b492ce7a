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


async def _keep_session(connection: Any) -> None:
    """Run instead of asyncpg's session reset when a connection goes back to the pool.

    That reset sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` after every use: a round trip and four statements per query, a tenth of the
    node's loop while clients connect (each one's account is looked up). papo's pooled
    connections take no session locks, listen to nothing, keep no cursor past its
    transaction and change no session setting (migrations, which take an advisory
    lock, run on a connection of their own); and asyncpg still rolls back a
    transaction left open before it calls this.
    """


async def create_pool(url: str, *, max_size: int = 10, connect_timeout: float = 5.0) -> Pool:
    pool: Pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=connect_timeout,
        init=_init_connection,
        reset=_keep_session,
        max_inactive_connection_lifetime=300.0,
    )
    return pool


async def ping(pool: Pool) -> None:
    async with pool.acquire() as connection:
        await connection.fetchval("SELECT 1")
