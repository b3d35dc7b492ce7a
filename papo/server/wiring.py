"""Turns settings into the domain objects the app needs; fails fast on bad auth config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from papo.domains.accounts.issuers import IssuerConfigError, TrustedIssuers, load_trusted_issuers
from papo.domains.accounts.passwords import Argon2Settings, Passwords
from papo.domains.accounts.service import AccountService
from papo.domains.accounts.store import AccountStore
from papo.domains.accounts.tokens import AccessTokens, SigningKeys
from papo.persistence.postgres import Pool
from papo.server.config import MIN_JWT_SECRET_LENGTH, ConfigError, Settings


@dataclass(frozen=True)
class AuthParts:
    """Everything accounts need except the database, built before any I/O."""

    passwords: Passwords
    access: AccessTokens
    issuers: TrustedIssuers
    refresh_lifetime: timedelta

    def service(self, pool: Pool) -> AccountService:
        return AccountService(
            AccountStore(pool), self.passwords, self.access, self.issuers, self.refresh_lifetime
        )


def build_auth(settings: Settings, env: Mapping[str, str] | None = None) -> AuthParts:
    auth = settings.auth
    if len(auth.jwt_secret) < MIN_JWT_SECRET_LENGTH:
        raise ConfigError(
            "PAPO_JWT_SECRET", None, f"at least {MIN_JWT_SECRET_LENGTH} random characters"
        )
    keys = SigningKeys(
        auth.jwt_key_id, {**auth.previous_jwt_secrets, auth.jwt_key_id: auth.jwt_secret}
    )
    try:
        issuers = (
            load_trusted_issuers(auth.trusted_issuers, os.environ if env is None else env)
            if auth.trusted_issuers
            else TrustedIssuers([])
        )
    except (IssuerConfigError, OSError, ValueError) as exc:
        raise ConfigError(
            "PAPO_TRUSTED_ISSUERS", "<see file>", f"a valid issuer list ({exc})"
        ) from None
    return AuthParts(
        passwords=Passwords(
            Argon2Settings(time_cost=auth.argon2_time_cost, memory_kib=auth.argon2_memory_kib)
        ),
        access=AccessTokens(keys, auth.access_token_seconds),
        issuers=issuers,
        refresh_lifetime=timedelta(seconds=auth.refresh_token_seconds),
    )
