"""Applies and reverts the versioned SQL migrations in ``papo/persistence/migrations``.

Each step runs in its own transaction together with its row in ``papo_migrations``,
under an advisory lock, so several nodes starting at once apply each step exactly once
and a failing step leaves the schema as it was before that step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import asyncpg

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")
# Arbitrary but fixed: the key of papo's migration advisory lock.
_LOCK_KEY = 0x7A_70_0001


class MigrationError(Exception):
    """The migration files or the recorded history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: int
    name: str
    applied_at: datetime | None


def load_migrations() -> list[Migration]:
    sources: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for entry in resources.files("papo.persistence.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version = int(match["version"])
        if names.setdefault(version, match["name"]) != match["name"]:
            raise MigrationError(f"two migrations share version {version:04d}")
        sources.setdefault(version, {})[match["direction"]] = entry.read_text("utf-8")
    migrations = []
    for version in sorted(sources):
        pair = sources[version]
        if set(pair) != {"up", "down"}:
            raise MigrationError(f"migration {version:04d} needs both an up and a down file")
        migrations.append(Migration(version, names[version], pair["up"], pair["down"]))
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise MigrationError("migration versions must be 0001, 0002, ... without gaps")
    return migrations


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS papo_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(connection: asyncpg.Connection) -> dict[int, datetime]:
    await connection.execute(_CREATE_TABLE)
    rows = await connection.fetch("SELECT version, applied_at FROM papo_migrations")
    return {row["version"]: row["applied_at"] for row in rows}


async def status(connection: asyncpg.Connection) -> list[MigrationStatus]:
    applied = await _applied(connection)
    return [MigrationStatus(m.version, m.name, applied.get(m.version)) for m in load_migrations()]


async def migrate_up(connection: asyncpg.Connection, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: all); returns the versions run."""
    migrations = load_migrations()
    done: list[int] = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        applied = await _applied(connection)
        for migration in migrations:
            if migration.version in applied:
                continue
            if target is not None and migration.version > target:
                break
            async with connection.transaction():
                await connection.execute(migration.up)
                await connection.execute(
                    "INSERT INTO papo_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            done.append(migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done


async def migrate_down(connection: asyncpg.Connection, target: int) -> list[int]:
    """Revert applied migrations above ``target`` (0 reverts all), newest first."""
    if target < 0:
        raise MigrationError("the target version cannot be negative")
    done: list[int] = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        applied = await _applied(connection)
        for migration in reversed(load_migrations()):
            if migration.version <= target or migration.version not in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.down)
                await connection.execute(
                    "DELETE FROM papo_migrations WHERE version = $1", migration.version
                )
            done.append(migration.version)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return done
