"""What every request handler may reach: built once per app, never a module global."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from papo.domains.accounts.service import AccountService
from papo.persistence.ratelimit import RateLimiter
from papo.protocol.errors import ErrorCode, PapoError
from papo.server.config import Settings
from papo.server.metrics import Metrics
from papo.server.resources import Resources

if TYPE_CHECKING:
    from papo.server.realtime import Realtime


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: Metrics
    resources: Resources
    rate_limiter: RateLimiter
    account_service: AccountService | None
    realtime: Realtime

    @property
    def accounts(self) -> AccountService:
        if self.account_service is None:
            raise PapoError(
                ErrorCode.UNAVAILABLE, "accounts need a database: set PAPO_DATABASE_URL"
            )
        return self.account_service


def app_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.papo
    return state
