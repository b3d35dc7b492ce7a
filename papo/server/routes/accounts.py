"""Accounts over REST: sign-up, sessions, the caller's profile, users and bots."""

from __future__ import annotations

from papo.domains.accounts.permissions import Permission
from papo.domains.accounts.schemas import (
    BotCreatedOut,
    BotTokenListOut,
    BotTokenOut,
    CreateBotRequest,
    CreateBotTokenRequest,
    LoginRequest,
    NewBotTokenOut,
    RefreshRequest,
    RegisterRequest,
    TokenPairOut,
    UpdateUserRequest,
    UserOut,
    UserPageOut,
    UsersQuery,
)
from papo.domains.accounts.service import TokenPair
from papo.persistence.ratelimit import Rate
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.rest import UUID_PARAM, Call, Endpoint


async def enforce_rate(call: Call, name: str, key: str, rate_text: str) -> None:
    verdict = await call.state.rate_limiter.hit(f"{name}:{key}", Rate.parse(rate_text))
    if not verdict.allowed:
        call.state.metrics.rate_limited.labels(name).inc()
        raise PapoError(
            ErrorCode.RATE_LIMITED,
            f"too many attempts; retry in {verdict.retry_after} s",
            retry_after=verdict.retry_after,
        )


def _pair(pair: TokenPair) -> TokenPairOut:
    return TokenPairOut(
        access_token=pair.access_token,
        token_type="Bearer",
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        user=UserOut.of(pair.user),
    )


async def register(call: Call) -> UserOut:
    body: RegisterRequest = call.body
    await enforce_rate(
        call, "register_ip", call.client_ip, call.state.settings.auth.rate_register_ip
    )
    user = await call.state.accounts.register(body.email, body.password, body.display_name)
    return UserOut.of(user)


async def login(call: Call) -> TokenPairOut:
    body: LoginRequest = call.body
    rates = call.state.settings.auth
    await enforce_rate(call, "login_ip", call.client_ip, rates.rate_login_ip)
    await enforce_rate(call, "login_account", body.email.strip().lower(), rates.rate_login_account)
    return _pair(await call.state.accounts.login(body.email, body.password))


async def refresh(call: Call) -> TokenPairOut:
    body: RefreshRequest = call.body
    return _pair(await call.state.accounts.refresh(body.refresh_token))


async def logout(call: Call) -> None:
    body: RefreshRequest = call.body
    await call.state.accounts.logout(body.refresh_token)


async def me(call: Call) -> UserOut:
    return UserOut.of(await call.state.accounts.user(call.user.user_id))


async def list_users(call: Call) -> UserPageOut:
    query: UsersQuery = call.query
    page = await call.state.accounts.list_users(query.limit, query.cursor, query.role)
    return UserPageOut(
        items=[UserOut.of(user) for user in page.items], next_cursor=page.next_cursor
    )


async def update_user(call: Call) -> UserOut:
    body: UpdateUserRequest = call.body
    user = await call.state.accounts.update_user(
        call.user, call.path_uuid("id"), role=body.role, disabled=body.disabled
    )
    return UserOut.of(user)


async def create_bot(call: Call) -> BotCreatedOut:
    body: CreateBotRequest = call.body
    bot, token, record = await call.state.accounts.create_bot(
        call.user, body.display_name, body.token_name
    )
    return BotCreatedOut(bot=UserOut.of(bot), token=token, details=BotTokenOut.of(record))


async def list_bot_tokens(call: Call) -> BotTokenListOut:
    tokens = await call.state.accounts.bot_tokens(call.path_uuid("id"))
    return BotTokenListOut(items=[BotTokenOut.of(token) for token in tokens])


async def create_bot_token(call: Call) -> NewBotTokenOut:
    body: CreateBotTokenRequest = call.body
    token, record = await call.state.accounts.add_bot_token(
        call.user, call.path_uuid("id"), body.name
    )
    return NewBotTokenOut(token=token, details=BotTokenOut.of(record))


async def revoke_bot_token(call: Call) -> None:
    await call.state.accounts.revoke_bot_token(call.path_uuid("id"))


AUTH = "auth"
ADMIN = "users and bots"

endpoints = [
    Endpoint(
        "POST",
        "/api/auth/register",
        register,
        "Create a customer account",
        AUTH,
        body=RegisterRequest,
        response=UserOut,
        status=201,
        errors=(ErrorCode.EMAIL_TAKEN, ErrorCode.RATE_LIMITED),
    ),
    Endpoint(
        "POST",
        "/api/auth/login",
        login,
        "Exchange email and password for tokens",
        AUTH,
        body=LoginRequest,
        response=TokenPairOut,
        errors=(ErrorCode.INVALID_CREDENTIALS, ErrorCode.ACCOUNT_DISABLED, ErrorCode.RATE_LIMITED),
        description="Unknown emails and wrong passwords answer the same, in the same time.",
    ),
    Endpoint(
        "POST",
        "/api/auth/refresh",
        refresh,
        "Rotate a refresh token into new tokens",
        AUTH,
        body=RefreshRequest,
        response=TokenPairOut,
        errors=(
            ErrorCode.REFRESH_TOKEN_INVALID,
            ErrorCode.REFRESH_TOKEN_REUSED,
            ErrorCode.ACCOUNT_DISABLED,
        ),
        description="Each refresh token works once. Presenting a used one revokes every "
        "token of that login.",
    ),
    Endpoint(
        "POST",
        "/api/auth/logout",
        logout,
        "Revoke a login's refresh tokens",
        AUTH,
        body=RefreshRequest,
        status=204,
        errors=(ErrorCode.REFRESH_TOKEN_INVALID,),
    ),
    Endpoint(
        "GET",
        "/api/auth/me",
        me,
        "The calling account",
        AUTH,
        auth="user",
        response=UserOut,
        errors=(ErrorCode.NOT_FOUND,),
    ),
    Endpoint(
        "GET",
        "/api/users",
        list_users,
        "List accounts, oldest first",
        ADMIN,
        auth=Permission.USERS_READ,
        query=UsersQuery,
        response=UserPageOut,
    ),
    Endpoint(
        "PATCH",
        "/api/users/{id}",
        update_user,
        "Change an account's role or disable it",
        ADMIN,
        auth=Permission.USERS_MANAGE,
        body=UpdateUserRequest,
        response=UserOut,
        path_params={"id": UUID_PARAM},
        errors=(ErrorCode.NOT_FOUND, ErrorCode.CANNOT_MODIFY_SELF),
        description="Disabling an account revokes its sessions; its access tokens stop "
        "working at once.",
    ),
    Endpoint(
        "POST",
        "/api/bots",
        create_bot,
        "Create a bot account and its first token",
        ADMIN,
        auth=Permission.BOTS_MANAGE,
        body=CreateBotRequest,
        response=BotCreatedOut,
        status=201,
    ),
    Endpoint(
        "GET",
        "/api/bots/{id}/tokens",
        list_bot_tokens,
        "List a bot's tokens",
        ADMIN,
        auth=Permission.BOTS_MANAGE,
        response=BotTokenListOut,
        path_params={"id": UUID_PARAM},
        errors=(ErrorCode.NOT_FOUND,),
    ),
    Endpoint(
        "POST",
        "/api/bots/{id}/tokens",
        create_bot_token,
        "Issue another token for a bot",
        ADMIN,
        auth=Permission.BOTS_MANAGE,
        body=CreateBotTokenRequest,
        response=NewBotTokenOut,
        status=201,
        path_params={"id": UUID_PARAM},
        errors=(ErrorCode.NOT_FOUND,),
    ),
    Endpoint(
        "DELETE",
        "/api/bot-tokens/{id}",
        revoke_bot_token,
        "Revoke a bot token",
        ADMIN,
        auth=Permission.BOTS_MANAGE,
        status=204,
        path_params={"id": UUID_PARAM},
        errors=(ErrorCode.NOT_FOUND,),
    ),
]
