"""Versioned migrations: up, down and up again leave the same schema."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from papo.persistence import migrate

SCHEMA_QUERY = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type
       || ' null=' || is_nullable || ' default=' || coalesce(column_default, '') AS item
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


@pytest.fixture
async def scratch_database(service_urls: dict[str, str]) -> AsyncIterator[str]:
    """A fresh, empty database, so reverting migrations never touches shared data."""
    admin_url = service_urls["database"]
    name = f"papo_scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def _schema(connection: asyncpg.Connection) -> list[tuple[str, str]]:
    return [
        (row["kind"], row["item"])
        for row in await connection.fetch(SCHEMA_QUERY)
        if "papo_migrations" not in row["item"]
    ]


async def test_up_down_up_leaves_the_same_schema(scratch_database: str) -> None:
    connection = await asyncpg.connect(scratch_database)
    try:
        every = [m.version for m in migrate.load_migrations()]
        assert await migrate.migrate_up(connection) == every
        after_first_up = await _schema(connection)
        assert ("column", "users.email text null=YES default=") in after_first_up

        assert await migrate.migrate_down(connection, 0) == list(reversed(every))
        assert await _schema(connection) == []

        assert await migrate.migrate_up(connection) == every
        assert await _schema(connection) == after_first_up
        assert await migrate.migrate_up(connection) == []  # nothing pending twice
    finally:
        await connection.close()


async def test_status_lists_applied_and_pending(scratch_database: str) -> None:
    connection = await asyncpg.connect(scratch_database)
    try:
        before = await migrate.status(connection)
        assert before
        assert all(entry.applied_at is None for entry in before)
        await migrate.migrate_up(connection, target=1)
        after = {entry.version: entry.applied_at for entry in await migrate.status(connection)}
        assert after[1] is not None
    finally:
        await connection.close()


async def test_a_failing_step_changes_nothing(scratch_database: str) -> None:
    connection = await asyncpg.connect(scratch_database)
    try:
        await migrate.migrate_up(connection, target=1)
        before = await _schema(connection)
        # Someone dropped a table by hand: reverting 0001 must fail as a whole.
        await connection.execute("DROP TABLE bot_tokens")
        with pytest.raises(asyncpg.UndefinedTableError):
            await migrate.migrate_down(connection, 0)
        remaining = await _schema(connection)
        assert [item for item in remaining if "bot_tokens" not in item[1]] == [
            item for item in before if "bot_tokens" not in item[1]
        ]
        assert (await migrate.status(connection))[0].applied_at is not None
    finally:
        await connection.close()


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papo.server.cli", "migrate", *args],
        env={"PATH": os.environ["PATH"], "PAPO_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_applies_reports_and_reverts(scratch_database: str) -> None:
    up = _cli(scratch_database, "up")
    assert up.returncode == 0, up.stderr
    assert "applied: 0001" in up.stdout
    status = _cli(scratch_database, "status")
    assert "0001  accounts" in status.stdout
    assert "pending" not in status.stdout
    down = _cli(scratch_database, "down")
    assert down.returncode == 0, down.stderr
    assert "reverted: 0002" in down.stdout
    assert "pending" in _cli(scratch_database, "status").stdout
