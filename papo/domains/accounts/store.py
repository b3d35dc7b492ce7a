"""PostgreSQL storage of accounts, refresh tokens and bot tokens.

Every statement that must be atomic is one statement or one transaction; refresh token
rotation in particular claims the old token with a single conditional UPDATE, so two
concurrent refreshes with the same token can never both succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from papo.domains.accounts.model import Role, User
from papo.persistence.gathered import GatheredReads

_USER_COLUMNS = (
    "id, email, display_name, role, disabled, created_at, updated_at, password_hash, "
    "external_issuer"
)


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        disabled=row["disabled"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        password_hash=row["password_hash"],
        external_issuer=row["external_issuer"],
    )


class EmailTaken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ClaimedRefresh:
    user_id: uuid.UUID
    family_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class BotToken:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class AccountStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        # Every authenticated connect reads its account; reconnecting clients come
        # together, and so do their reads (papo/persistence/gathered.py).
        self._users = GatheredReads(self._users_by_ids)

    # --- users ------------------------------------------------------------------

    async def create_user(
        self,
        *,
        email: str | None,
        display_name: str,
        password_hash: str | None,
        role: Role,
    ) -> User:
        try:
            row = await self._pool.fetchrow(
                f"INSERT INTO users (email, display_name, password_hash, role) "
                f"VALUES ($1, $2, $3, $4) RETURNING {_USER_COLUMNS}",
                email,
                display_name,
                password_hash,
                role.value,
            )
        except asyncpg.UniqueViolationError:
            raise EmailTaken from None
        assert row is not None
        return _user(row)

    async def external_user(self, issuer: str, subject: str, display_name: str, role: Role) -> User:
        """The papo user behind an external identity, created on first sight."""
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO users (display_name, role, external_issuer, external_subject)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (external_issuer, external_subject)
                WHERE external_issuer IS NOT NULL
                DO UPDATE SET external_issuer = EXCLUDED.external_issuer
            RETURNING {_USER_COLUMNS}
            """,
            display_name,
            role.value,
            issuer,
            subject,
        )
        assert row is not None
        return _user(row)

    async def by_email(self, email: str) -> User | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE lower(email) = $1", email
        )
        return _user(row) if row else None

    async def by_id(self, user_id: uuid.UUID) -> User | None:
        return await self._users.get(user_id)

    async def _users_by_ids(self, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, User]:
        rows = await self._pool.fetch(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY($1::uuid[])", user_ids
        )
        return {row["id"]: _user(row) for row in rows}

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._pool.execute(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
            user_id,
            password_hash,
        )

    async def update_user(
        self, user_id: uuid.UUID, *, role: Role | None, disabled: bool | None
    ) -> User | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE users SET role = coalesce($2, role), disabled = coalesce($3, disabled),
                             updated_at = now()
            WHERE id = $1 RETURNING {_USER_COLUMNS}
            """,
            user_id,
            role.value if role else None,
            disabled,
        )
        return _user(row) if row else None

    async def list_users(
        self, *, limit: int, after: tuple[datetime, uuid.UUID] | None, role: Role | None
    ) -> list[User]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_USER_COLUMNS} FROM users
            WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))
              AND ($3::text IS NULL OR role = $3)
            ORDER BY created_at, id LIMIT $4
            """,
            after[0] if after else None,
            after[1] if after else None,
            role.value if role else None,
            limit,
        )
        return [_user(row) for row in rows]

    # --- refresh tokens -----------------------------------------------------------

    async def add_refresh(
        self, user_id: uuid.UUID, family_id: uuid.UUID, token_hash: bytes, lifetime: timedelta
    ) -> None:
        await self._pool.execute(
            "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) "
            "VALUES ($1, $2, $3, now() + $4)",
            user_id,
            family_id,
            token_hash,
            lifetime,
        )

    async def claim_refresh(self, token_hash: bytes) -> ClaimedRefresh | None:
        row = await self._pool.fetchrow(
            """
            UPDATE refresh_tokens SET used_at = now()
            WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL
              AND expires_at > now()
            RETURNING user_id, family_id
            """,
            token_hash,
        )
        return ClaimedRefresh(row["user_id"], row["family_id"]) if row else None

    async def refresh_family(self, token_hash: bytes) -> tuple[uuid.UUID, bool] | None:
        """The family of a token that could not be claimed, and whether it was used."""
        row = await self._pool.fetchrow(
            "SELECT family_id, used_at IS NOT NULL AS used FROM refresh_tokens "
            "WHERE token_hash = $1",
            token_hash,
        )
        return (row["family_id"], row["used"]) if row else None

    async def revoke_family(self, family_id: uuid.UUID) -> None:
        await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE family_id = $1 AND revoked_at IS NULL",
            family_id,
        )

    async def revoke_all_refresh(self, user_id: uuid.UUID) -> None:
        await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE user_id = $1 AND revoked_at IS NULL",
            user_id,
        )

    # --- bot tokens ---------------------------------------------------------------

    async def add_bot_token(
        self, bot_id: uuid.UUID, name: str, token_hash: bytes, created_by: uuid.UUID
    ) -> BotToken:
        row = await self._pool.fetchrow(
            "INSERT INTO bot_tokens (user_id, name, token_hash, created_by) "
            "VALUES ($1, $2, $3, $4) "
            "RETURNING id, user_id, name, created_at, last_used_at, revoked_at",
            bot_id,
            name,
            token_hash,
            created_by,
        )
        assert row is not None
        return BotToken(**dict(row))

    async def bot_for_token(self, token_hash: bytes) -> User | None:
        row = await self._pool.fetchrow(
            f"""
            WITH used AS (
                UPDATE bot_tokens SET last_used_at = now()
                WHERE token_hash = $1 AND revoked_at IS NULL
                RETURNING user_id
            )
            SELECT {_USER_COLUMNS} FROM users WHERE id = (SELECT user_id FROM used)
            """,
            token_hash,
        )
        return _user(row) if row else None

    async def bot_tokens(self, bot_id: uuid.UUID) -> list[BotToken]:
        rows = await self._pool.fetch(
            "SELECT id, user_id, name, created_at, last_used_at, revoked_at FROM bot_tokens "
            "WHERE user_id = $1 ORDER BY created_at",
            bot_id,
        )
        return [BotToken(**dict(row)) for row in rows]

    async def revoke_bot_token(self, token_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "UPDATE bot_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            token_id,
        )
        return bool(status.endswith(" 1"))
