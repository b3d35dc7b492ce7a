"""Access tokens (short-lived JWTs) and opaque secrets (refresh and bot tokens).

Access tokens are HS256 JWTs whose header names the key (``kid``) that signed them:
papo signs with one current key and verifies with it and any previous keys, so a secret
can rotate without logging everybody out. Opaque tokens are random strings stored only
as SHA-256 digests, so a database leak does not leak usable tokens.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson

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

    def verify(self, token: str, header: dict[str, Any] | None = None) -> AccessClaims:
        """``header``, when the caller has already peeked at the token, saves a parse."""
        if header is None:
            header, _ = peek(token)
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


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and claims, unverified: only to choose how to verify it (its
    issuer, its key). Nothing read here is trusted; the verification that follows
    checks the signature, issuer and expiry itself. Parsed here once, not by PyJWT for
    each of those choices: PyJWT's unverified decode took as long as a verification,
    and every connect and every authenticated request pays for it."""
    try:
        header_part, claims_part, _signature = token.split(".")
        header = orjson.loads(_base64url(header_part))
        claims = orjson.loads(_base64url(claims_part))
    except ValueError:  # wrong number of parts, bad base64, bad JSON
        raise PapoError(ErrorCode.TOKEN_INVALID, "the token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise PapoError(ErrorCode.TOKEN_INVALID, "the token is not a JWT")
    return header, claims


def _base64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


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
