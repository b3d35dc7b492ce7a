"""Trusted external issuers: application backends that sign their own JWTs for papo.

Each issuer is configured with exactly one kind of key, and that key's algorithm is the
only one ever used to check its tokens (``alg=none`` and RS256/HS256 confusion fail).
HMAC secrets come from environment variables named in the config, never from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson

from papo.domains.accounts.model import Role
from papo.domains.accounts.tokens import decode_pinned, peek
from papo.protocol.errors import ErrorCode, PapoError

ALLOWED_ALGORITHMS = ("HS256", "RS256", "ES256")
EXTERNAL_REQUIRED_CLAIMS = ["sub", "exp", "iss"]


class IssuerConfigError(ValueError):
    """The trusted-issuers configuration cannot be used; the message says why."""


@dataclass(frozen=True)
class PinnedKey:
    algorithm: str
    key: Any


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    role: Role
    audience: str | None
    keys_by_kid: dict[str | None, PinnedKey]

    def key_for(self, kid: str | None) -> PinnedKey:
        if kid in self.keys_by_kid:
            return self.keys_by_kid[kid]
        if None in self.keys_by_kid and len(self.keys_by_kid) == 1:
            return self.keys_by_kid[None]
        raise PapoError(ErrorCode.TOKEN_INVALID, f"issuer {self.issuer} has no key {kid!r}")


@dataclass(frozen=True, slots=True)
class ExternalClaims:
    issuer: str
    subject: str
    role: Role
    display_name: str
    expires_at: float


class TrustedIssuers:
    def __init__(self, issuers: list[TrustedIssuer]) -> None:
        self._by_name = {issuer.issuer: issuer for issuer in issuers}

    def __contains__(self, issuer: object) -> bool:
        return issuer in self._by_name

    def verify(
        self, token: str, issuer_name: str, header: dict[str, Any] | None = None
    ) -> ExternalClaims:
        """``header``, when the caller has already peeked at the token, saves a parse."""
        issuer = self._by_name[issuer_name]
        if header is None:
            header, _ = peek(token)
        pinned = issuer.key_for(header.get("kid"))
        claims = decode_pinned(
            token,
            pinned.key,
            [pinned.algorithm],
            issuer=issuer.issuer,
            audience=issuer.audience,
            required=EXTERNAL_REQUIRED_CLAIMS,
        )
        subject = str(claims["sub"])
        if not 1 <= len(subject) <= 255:
            raise PapoError(ErrorCode.TOKEN_INVALID, "the token's subject is malformed")
        name = claims.get("name") or claims.get("preferred_username") or subject
        return ExternalClaims(
            issuer=issuer.issuer,
            subject=subject,
            role=issuer.role,
            display_name=str(name)[:64],
            expires_at=float(claims["exp"]),
        )


def _require(entry: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in entry:
        raise IssuerConfigError(f"{where}: '{name}' is required")
    return entry[name]


def _pem(path: str, algorithm: str, where: str) -> PinnedKey:
    try:
        text = Path(path).read_bytes()
        key = jwt.get_algorithm_by_name(algorithm).prepare_key(text)
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise IssuerConfigError(f"{where}: cannot load public key {path}: {exc}") from None
    return PinnedKey(algorithm, key)


def _jwks(path: str, where: str) -> dict[str | None, PinnedKey]:
    try:
        keyset = jwt.PyJWKSet.from_json(Path(path).read_text())
    except (OSError, jwt.PyJWTError) as exc:
        raise IssuerConfigError(f"{where}: cannot load JWKS {path}: {exc}") from None
    keys: dict[str | None, PinnedKey] = {}
    for jwk in keyset.keys:
        if jwk.algorithm_name not in ALLOWED_ALGORITHMS:
            raise IssuerConfigError(f"{where}: key {jwk.key_id} uses {jwk.algorithm_name}")
        keys[jwk.key_id] = PinnedKey(jwk.algorithm_name, jwk.key)
    return keys


def _one_issuer(entry: Any, env: Mapping[str, str], where: str) -> TrustedIssuer:
    if not isinstance(entry, dict):
        raise IssuerConfigError(f"{where}: expected an object")
    name = _require(entry, "issuer", where)
    if not isinstance(name, str) or not name:
        raise IssuerConfigError(f"{where}: 'issuer' must be a non-empty string")
    try:
        role = Role(entry.get("role", Role.CUSTOMER.value))
    except ValueError:
        raise IssuerConfigError(f"{where}: unknown role {entry.get('role')!r}") from None
    if role in (Role.ADMIN, Role.BOT):
        raise IssuerConfigError(f"{where}: external users cannot be given role {role.value}")
    keys: dict[str | None, PinnedKey]
    if "jwks_file" in entry:
        keys = _jwks(str(entry["jwks_file"]), where)
    else:
        algorithm = str(_require(entry, "algorithm", where))
        if algorithm not in ALLOWED_ALGORITHMS:
            raise IssuerConfigError(f"{where}: algorithm must be one of {ALLOWED_ALGORITHMS}")
        if algorithm == "HS256":
            variable = str(_require(entry, "secret_env", where))
            secret = env.get(variable, "")
            if len(secret) < 32:
                raise IssuerConfigError(f"{where}: {variable} must hold at least 32 characters")
            pinned = PinnedKey(algorithm, secret)
        else:
            pinned = _pem(str(_require(entry, "public_key_file", where)), algorithm, where)
        keys = {entry.get("kid"): pinned}
    return TrustedIssuer(name, role, entry.get("audience"), keys)


def load_trusted_issuers(source: str, env: Mapping[str, str]) -> TrustedIssuers:
    """``source`` is a JSON list, inline or as the path of a file holding one."""
    inline = source.lstrip().startswith(("[", "{"))
    try:
        text = source if inline else Path(source).read_text()
    except OSError as exc:
        raise IssuerConfigError(f"cannot read {source}: {exc.strerror}") from None
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise IssuerConfigError(f"not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise IssuerConfigError("expected a JSON list of issuers")
    issuers = [
        _one_issuer(entry, env, f"issuer #{index + 1}") for index, entry in enumerate(entries)
    ]
    if len({issuer.issuer for issuer in issuers}) != len(issuers):
        raise IssuerConfigError("two entries name the same issuer")
    return TrustedIssuers(issuers)
