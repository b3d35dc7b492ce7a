"""The accounts' wire shapes: request bodies and responses of the REST API.

These msgspec Structs validate input, encode output and generate the OpenAPI document;
they are the only description of the accounts API.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from papo.domains.accounts.model import (
    DISPLAY_NAME_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    Role,
    User,
)
from papo.domains.accounts.store import BotToken

Email = Annotated[
    str,
    msgspec.Meta(
        max_length=254,
        description="Compared case-insensitively",
        extra_json_schema={"format": "email"},
    ),
]
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=PASSWORD_MIN,
        max_length=PASSWORD_MAX,
        description="Cannot be the email address",
    ),
]
LoginPassword = Annotated[str, msgspec.Meta(max_length=1024)]
Name = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=DISPLAY_NAME_MAX, pattern=r"\S"),
]
OpaqueToken = Annotated[str, msgspec.Meta(max_length=512)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Request bodies refuse unknown fields: a typo is an error, not a silent no-op."""


class RegisterRequest(Strict):
    email: Email
    password: Password
    display_name: Name


class LoginRequest(Strict):
    email: Annotated[str, msgspec.Meta(max_length=1024)]
    password: LoginPassword


class RefreshRequest(Strict):
    refresh_token: OpaqueToken


class UpdateUserRequest(Strict):
    role: Role | None = None
    disabled: bool | None = None


class CreateBotRequest(Strict):
    display_name: Name
    token_name: Name = "default"


class CreateBotTokenRequest(Strict):
    name: Name


class UsersQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    role: Role | None = None


class UserOut(msgspec.Struct, kw_only=True):
    id: str
    email: str | None
    display_name: str
    role: Role
    disabled: bool
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=str(user.id),
            email=user.email,
            display_name=user.display_name,
            role=user.role,
            disabled=user.disabled,
            created_at=user.created_at.isoformat(),
            updated_at=user.updated_at.isoformat(),
        )


class TokenPairOut(msgspec.Struct, kw_only=True):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    user: UserOut


class UserPageOut(msgspec.Struct, kw_only=True):
    items: list[UserOut]
    next_cursor: str | None


class BotTokenOut(msgspec.Struct, kw_only=True):
    id: str
    bot_id: str
    name: str
    created_at: str
    last_used_at: str | None
    revoked: bool

    @classmethod
    def of(cls, token: BotToken) -> BotTokenOut:
        return cls(
            id=str(token.id),
            bot_id=str(token.user_id),
            name=token.name,
            created_at=token.created_at.isoformat(),
            last_used_at=token.last_used_at.isoformat() if token.last_used_at else None,
            revoked=token.revoked_at is not None,
        )


class NewBotTokenOut(msgspec.Struct, kw_only=True):
    token: Annotated[str, msgspec.Meta(description="Shown once; papo keeps only a digest")]
    details: BotTokenOut


class BotCreatedOut(msgspec.Struct, kw_only=True):
    bot: UserOut
    token: Annotated[str, msgspec.Meta(description="Shown once; papo keeps only a digest")]
    details: BotTokenOut


class BotTokenListOut(msgspec.Struct, kw_only=True):
    items: list[BotTokenOut]
