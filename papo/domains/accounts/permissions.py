"""The one place that decides who may do what.

Handlers declare the ``Permission`` they need; roles map to permissions here and
nowhere else, so an audit of papo's authorisation is a read of this file.
"""

from __future__ import annotations

from enum import StrEnum

from papo.domains.accounts.model import Identity, Role
from papo.protocol.errors import ErrorCode, PapoError


class Permission(StrEnum):
    USERS_READ = "users:read"
    USERS_MANAGE = "users:manage"
    BOTS_MANAGE = "bots:manage"
    EVENTS_PUBLISH = "events:publish"
    DASHBOARD_VIEW = "dashboard:view"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.AGENT: frozenset({Permission.DASHBOARD_VIEW}),
    Role.SELLER: frozenset(),
    Role.CUSTOMER: frozenset(),
    Role.BOT: frozenset({Permission.EVENTS_PUBLISH}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def require(identity: Identity, permission: Permission) -> None:
    if not allowed(identity.role, permission):
        raise PapoError(
            ErrorCode.FORBIDDEN,
            f"role {identity.role.value} may not do this (needs {permission.value})",
        )
