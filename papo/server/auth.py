"""Where a connection's credential comes from, for REST and WebSocket alike.

Bots send ``Authorization: Bearer <token>``; browsers cannot set headers on a
WebSocket, so they pass ``?token=`` or send the token in their first frame. All three
end in ``AccountService.authenticate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papo.domains.accounts.model import Identity
from papo.domains.accounts.service import AccountService
from papo.protocol.errors import ErrorCode, PapoError


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_from_handshake(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The bearer header wins over the query parameter; ``None`` when neither is sent."""
    if token := bearer_token(headers):
        return token
    query_token = query.get("token", "").strip()
    return query_token or None


def token_from_first_frame(frame: Mapping[str, Any]) -> str:
    """``{"type": "auth", "token": "..."}`` — anything else is refused."""
    token = frame.get("token")
    if frame.get("type") != "auth" or not isinstance(token, str) or not token.strip():
        raise PapoError(
            ErrorCode.TOKEN_MISSING,
            'authenticate first: send {"type": "auth", "token": "<token>"}',
            field="token",
        )
    return token.strip()


async def identify_websocket(
    accounts: AccountService,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    first_frame: Mapping[str, Any] | None = None,
) -> Identity:
    """The WebSocket auth hook: handshake credentials first, else the first frame."""
    token = token_from_handshake(headers, query)
    if token is None:
        if first_frame is None:
            raise PapoError(ErrorCode.TOKEN_MISSING, "no token in the handshake")
        token = token_from_first_frame(first_frame)
    return await accounts.authenticate(token)
