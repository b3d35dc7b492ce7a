"""WebSocket close codes papo uses, and whether a client should reconnect after each.

Standard codes (1000-1015) keep their RFC 6455 meaning; papo's own live in 4000-4099.
``reconnect`` tells a client library what to do without parsing the reason text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    SERVICE_RESTART = 1012
    TOKEN_EXPIRED = 4001
    AUTH_FAILED = 4003
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4009
    AUTH_TIMEOUT = 4010
    PROTOCOL_ABUSE = 4011


@dataclass(frozen=True)
class CloseInfo:
    reason: str
    reconnect: str  # "no", "yes", "yes, with a new token", "yes, after a pause"
    meaning: str


CLOSE_INFO: dict[CloseCode, CloseInfo] = {
    CloseCode.NORMAL: CloseInfo("normal", "no", "The client or server ended the session."),
    CloseCode.GOING_AWAY: CloseInfo(
        "going away", "yes", "The server is stopping without a drain (e.g. a crash)."
    ),
    CloseCode.MESSAGE_TOO_BIG: CloseInfo(
        "message too big",
        "yes",
        "A frame exceeded the maximum frame size; do not send it again.",
    ),
    CloseCode.SERVICE_RESTART: CloseInfo(
        "reconnect elsewhere",
        "yes",
        "The node is draining for a restart or scale-down. Reconnect (to any node) and resume.",
    ),
    CloseCode.TOKEN_EXPIRED: CloseInfo(
        "token expired",
        "yes, with a new token",
        "The access token expired and was not refreshed with `auth.refresh` in time.",
    ),
    CloseCode.AUTH_FAILED: CloseInfo(
        "authentication failed",
        "no",
        "The token was missing, invalid, or the account is disabled.",
    ),
    CloseCode.SLOW_CONSUMER: CloseInfo(
        "slow consumer",
        "yes",
        "The client read too slowly and its outbox overflowed. Reconnect and resume.",
    ),
    CloseCode.RATE_LIMITED: CloseInfo(
        "rate limited",
        "yes, after a pause",
        "The client kept sending frames faster than allowed after being warned.",
    ),
    CloseCode.AUTH_TIMEOUT: CloseInfo(
        "authentication timeout",
        "yes",
        "No token at the handshake and no `auth` frame within the time allowed.",
    ),
    CloseCode.PROTOCOL_ABUSE: CloseInfo(
        "too many bad frames",
        "yes, after a pause",
        "The client kept sending frames papo cannot accept after being told why.",
    ),
}
