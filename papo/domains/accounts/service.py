"""Accounts' use cases: register, log in, refresh, authenticate, administer.

The REST routes, the WebSocket handshake and the CLI all call these; none of them
touches the store or the token machinery directly.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from papo.domains.accounts.issuers import TrustedIssuers
from papo.domains.accounts.model import (
    Identity,
    Role,
    User,
    check_password,
    parse_display_name,
    parse_email,
)
from papo.domains.accounts.passwords import Passwords
from papo.domains.accounts.store import AccountStore, BotToken, EmailTaken
from papo.domains.accounts.tokens import (
    BOT_TOKEN_PREFIX,
    PAPO_ISSUER,
    AccessTokens,
    digest,
    new_opaque_token,
    peek,
)
from papo.protocol.errors import ErrorCode, PapoError, validation_error

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    user: User


@dataclass(frozen=True, slots=True)
class UserPage:
    items: list[User]
    next_cursor: str | None


def _encode_cursor(user: User) -> str:
    raw = f"{user.created_at.isoformat()}|{user.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError):
        raise validation_error("cursor", "cursor is not one papo issued") from None


async def create_account(
    store: AccountStore,
    passwords: Passwords,
    email: str,
    password: str,
    display_name: str,
    role: Role,
) -> User:
    """Validate and store a password account; also used by ``papo users create-admin``."""
    email = parse_email(email)
    name = parse_display_name(display_name)
    check_password(password, email)
    try:
        return await store.create_user(
            email=email,
            display_name=name,
            password_hash=await passwords.hash(password),
            role=role,
        )
    except EmailTaken:
        raise PapoError(
            ErrorCode.EMAIL_TAKEN, "an account with this email exists", field="email"
        ) from None


INVALID_CREDENTIALS = PapoError(ErrorCode.INVALID_CREDENTIALS, "wrong email or password")


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        passwords: Passwords,
        access: AccessTokens,
        issuers: TrustedIssuers,
        refresh_lifetime: timedelta,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.access = access
        self.issuers = issuers
        self.refresh_lifetime = refresh_lifetime

    # --- sign-up and sessions -------------------------------------------------------

    async def register(
        self, email: str, password: str, display_name: str, role: Role = Role.CUSTOMER
    ) -> User:
        return await create_account(self.store, self.passwords, email, password, display_name, role)

    async def login(self, email: str, password: str) -> TokenPair:
        try:
            email = parse_email(email)
        except PapoError:
            await self.passwords.verify(None, password)  # same cost as a real attempt
            raise INVALID_CREDENTIALS from None
        user = await self.store.by_email(email)
        stored = user.password_hash if user else None
        if not await self.passwords.verify(stored, password) or user is None or stored is None:
            raise INVALID_CREDENTIALS
        if user.disabled:
            raise PapoError(ErrorCode.ACCOUNT_DISABLED, "this account is disabled")
        if self.passwords.needs_rehash(stored):
            await self.store.set_password_hash(user.id, await self.passwords.hash(password))
        return await self._new_session(user, family_id=uuid.uuid4())

    async def _new_session(self, user: User, family_id: uuid.UUID) -> TokenPair:
        refresh = new_opaque_token()
        await self.store.add_refresh(user.id, family_id, digest(refresh), self.refresh_lifetime)
        return TokenPair(
            access_token=self.access.issue(user.id, user.role),
            expires_in=self.access.lifetime_seconds,
            refresh_token=refresh,
            user=user,
        )

    async def refresh(self, refresh_token: str) -> TokenPair:
        token_hash = digest(refresh_token)
        claimed = await self.store.claim_refresh(token_hash)
        if claimed is None:
            known = await self.store.refresh_family(token_hash)
            if known is not None and known[1]:
                # A rotated token came back: someone holds a copy. End that whole login.
                await self.store.revoke_family(known[0])
                raise PapoError(
                    ErrorCode.REFRESH_TOKEN_REUSED,
                    "this refresh token was already used; the session is revoked",
                )
            raise PapoError(
                ErrorCode.REFRESH_TOKEN_INVALID, "the refresh token is unknown, expired or revoked"
            )
        user = await self.store.by_id(claimed.user_id)
        if user is None or user.disabled:
            await self.store.revoke_family(claimed.family_id)
            raise PapoError(ErrorCode.ACCOUNT_DISABLED, "this account is disabled")
        return await self._new_session(user, family_id=claimed.family_id)

    async def logout(self, refresh_token: str) -> None:
        known = await self.store.refresh_family(digest(refresh_token))
        if known is None:
            raise PapoError(ErrorCode.REFRESH_TOKEN_INVALID, "the refresh token is unknown")
        await self.store.revoke_family(known[0])

    # --- proving identity -------------------------------------------------------------

    async def authenticate(self, token: str) -> Identity:
        """Any credential papo accepts: its own access JWT, a bot token, or a JWT from a
        trusted issuer. The account is read on every call, so disabling a user or
        changing a role takes effect at once."""
        if token.startswith(BOT_TOKEN_PREFIX):
            bot = await self.store.bot_for_token(digest(token))
            if bot is None:
                raise PapoError(ErrorCode.TOKEN_INVALID, "the bot token is unknown or revoked")
            return self._identity(bot, via="bot", expires_at=None)
        header, unverified = peek(token)
        issuer = unverified.get("iss")
        if issuer == PAPO_ISSUER:
            claims = self.access.verify(token, header)
            user = await self.store.by_id(claims.user_id)
            if user is None:
                raise PapoError(ErrorCode.TOKEN_INVALID, "the token's user no longer exists")
            return self._identity(user, via="access", expires_at=claims.expires_at)
        if isinstance(issuer, str) and issuer in self.issuers:
            external = self.issuers.verify(token, issuer, header)
            user = await self.store.external_user(
                external.issuer, external.subject, external.display_name, external.role
            )
            return self._identity(user, via=f"external:{issuer}", expires_at=external.expires_at)
        raise PapoError(ErrorCode.TOKEN_INVALID, "the token's issuer is not trusted")

    @staticmethod
    def _identity(user: User, *, via: str, expires_at: float | None) -> Identity:
        if user.disabled:
            raise PapoError(ErrorCode.ACCOUNT_DISABLED, "this account is disabled")
        return Identity(user.id, user.role, user.display_name, via, expires_at)

    async def user(self, user_id: uuid.UUID) -> User:
        user = await self.store.by_id(user_id)
        if user is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such user")
        return user

    # --- administration -----------------------------------------------------------------

    async def list_users(self, limit: int, cursor: str | None, role: Role | None) -> UserPage:
        if not 1 <= limit <= MAX_PAGE:
            raise validation_error("limit", f"limit must be from 1 to {MAX_PAGE}")
        after = _decode_cursor(cursor) if cursor else None
        users = await self.store.list_users(limit=limit + 1, after=after, role=role)
        page = users[:limit]
        more = len(users) > limit
        return UserPage(page, _encode_cursor(page[-1]) if more and page else None)

    async def update_user(
        self, actor: Identity, user_id: uuid.UUID, *, role: Role | None, disabled: bool | None
    ) -> User:
        if actor.user_id == user_id and (disabled or (role and role != actor.role)):
            raise PapoError(
                ErrorCode.CANNOT_MODIFY_SELF,
                "admins cannot disable or demote themselves; ask another admin",
            )
        user = await self.store.update_user(user_id, role=role, disabled=disabled)
        if user is None:
            raise PapoError(ErrorCode.NOT_FOUND, "no such user")
        if disabled:
            await self.store.revoke_all_refresh(user_id)
        return user

    async def create_bot(
        self, actor: Identity, display_name: str, token_name: str
    ) -> tuple[User, str, BotToken]:
        bot = await self.store.create_user(
            email=None,
            display_name=parse_display_name(display_name),
            password_hash=None,
            role=Role.BOT,
        )
        token, record = await self.add_bot_token(actor, bot.id, token_name)
        return bot, token, record

    async def add_bot_token(
        self, actor: Identity, bot_id: uuid.UUID, name: str
    ) -> tuple[str, BotToken]:
        bot = await self.user(bot_id)
        if bot.role is not Role.BOT:
            raise PapoError(ErrorCode.NOT_FOUND, "no such bot")
        name = parse_display_name(name, field="name")
        token = new_opaque_token(BOT_TOKEN_PREFIX)
        return token, await self.store.add_bot_token(bot.id, name, digest(token), actor.user_id)

    async def bot_tokens(self, bot_id: uuid.UUID) -> list[BotToken]:
        bot = await self.user(bot_id)
        if bot.role is not Role.BOT:
            raise PapoError(ErrorCode.NOT_FOUND, "no such bot")
        return await self.store.bot_tokens(bot_id)

    async def revoke_bot_token(self, token_id: uuid.UUID) -> None:
        if not await self.store.revoke_bot_token(token_id):
            raise PapoError(ErrorCode.NOT_FOUND, "no such active bot token")
