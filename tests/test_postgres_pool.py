"""papo's PostgreSQL pool: a connection goes back without a session reset per use, and
still never carries one user's transaction to the next."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from papo.persistence.postgres import Pool, create_pool


@pytest.fixture
async def pool(service_urls: dict[str, str]) -> AsyncIterator[Pool]:
    pool = await create_pool(service_urls["database"], max_size=1)
    try:
        yield pool
    finally:
        await pool.close()


async def _last_statement(url: str, backend: int) -> str:
    """What the server last ran for ``backend``, asked from a connection of its own."""
    observer = await asyncpg.connect(url)
    try:
        statement: str = await observer.fetchval(
            "SELECT query FROM pg_stat_activity WHERE pid = $1", backend
        )
    finally:
        await observer.close()
    return statement


async def test_a_returned_connection_has_run_only_its_users_query(
    pool: Pool, service_urls: dict[str, str]
) -> None:
    async with pool.acquire() as connection:
        backend = connection.get_server_pid()
        assert await connection.fetchval("SELECT 41 + 1") == 42
    # asyncpg's default would have sent its reset statements after the query.
    assert await _last_statement(service_urls["database"], backend) == "SELECT 41 + 1"


async def test_a_transaction_left_open_is_rolled_back_when_the_connection_returns(
    pool: Pool,
) -> None:
    # A table of this session only: the pool holds one connection, so every acquire
    # below is the same session.
    async with pool.acquire() as connection:
        await connection.execute("CREATE TEMP TABLE pool_probe (n int)")
    try:
        async with pool.acquire() as connection:
            await connection.execute("BEGIN")
            await connection.execute("INSERT INTO pool_probe VALUES (1)")
        async with pool.acquire() as connection:
            assert not connection.is_in_transaction()
            assert await connection.fetchval("SELECT count(*) FROM pool_probe") == 0
    finally:
        async with pool.acquire() as connection:
            await connection.execute("DROP TABLE pool_probe")
