"""Access tokens (short-lived JWTs) and opaque secrets (refresh and bot tokens).

Access tokens are HS256 JWTs whose header names the key (``kid``) that signed them:
papo signs with one current key and verifies with it and any previous keys, so a secret
can rotate without logging everybody out. Opaque tokens are random strings stored only
as SHA-256 digests, so a database leak does not leak usable tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from papo.domains.accounts.model import Role
from papo.protocol.errors import ErrorCode, PapoError

PAPO_ISSUER = "papo"
ACCESS_ALGORITHM = "HS256"
BOT_TOKEN_PREFIX = "papo_bot_"
REQUIRED_CLAIMS = ["sub", "exp", "iat", "jti", "role", "iss"]


@dataclass(frozen=True)
class SigningKeys:
    """``current`` signs; every key in ``verify`` (current included) is accepted."""

    current_kid: str
    secrets_by_kid: dict[str, str]

    def __post_init__(self) -> None:
        if self.current_kid not in self.secrets_by_kid:
            raise ValueError("the current key id must be among the keys")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    role: Role
    expires_at: float
    token_id: str


class AccessTokens:
    def __init__(self, keys: SigningKeys, lifetime_seconds: int) -> None:
        self._keys = keys
        self.lifetime_seconds = lifetime_seconds

    def issue(self, user_id: uuid.UUID, role: Role, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": PAPO_ISSUER,
            "sub": str(user_id),
            "role": role.value,
            "iat": issued,
            "exp": issued + self.lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        kid = self._keys.current_kid
        return jwt.encode(
            claims,
            self._keys.secrets_by_kid[kid],
            algorithm=ACCESS_ALGORITHM,
            headers={"kid": kid},
        )

    def verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise PapoError(ErrorCode.TOKEN_INVALID, "the token is not a JWT") from None
        secret = self._keys.secrets_by_kid.get(str(header.get("kid")))
        if secret is None:
            raise PapoError(ErrorCode.TOKEN_INVALID, "the token was signed with an unknown key")
        claims = decode_pinned(token, secret, [ACCESS_ALGORITHM], issuer=PAPO_ISSUER)
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                role=Role(claims["role"]),
                expires_at=float(claims["exp"]),
                token_id=str(claims["jti"]),
            )
        except (ValueError, KeyError):
            raise PapoError(ErrorCode.TOKEN_INVALID, "the token's claims are malformed") from None


def decode_pinned(
    token: str,
    key: Any,
    algorithms: list[str],
    *,
    issuer: str,
    audience: str | None = None,
    required: list[str] | None = None,
) -> dict[str, Any]:
    """Verify signature, expiry and issuer with the algorithms pinned for ``key``.

    Pinning is what refuses ``alg=none`` and algorithm confusion: a token is only ever
    checked with the algorithm its key was configured for, never the one it claims.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            options={
                "require": required or REQUIRED_CLAIMS,
                "verify_aud": audience is not None,
            },
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise PapoError(ErrorCode.TOKEN_EXPIRED, "the token has expired") from None
    except jwt.PyJWTError as exc:
        raise PapoError(ErrorCode.TOKEN_INVALID, f"the token is invalid: {exc}") from None
    return claims


def new_opaque_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
