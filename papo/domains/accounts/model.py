"""Accounts' value objects: each validates once, at the edge, with a clear error."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from papo.protocol.errors import validation_error

EMAIL_MAX = 254
DISPLAY_NAME_MAX = 64
PASSWORD_MIN = 10
PASSWORD_MAX = 128
_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    SELLER = "seller"
    CUSTOMER = "customer"
    BOT = "bot"


def parse_role(value: str, field: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(role.value for role in Role)
        raise validation_error(field, f"role must be one of {allowed}") from None


def parse_email(value: str, field: str = "email") -> str:
    """Emails compare case-insensitively, so papo stores them lower-cased."""
    email = value.strip().lower()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise validation_error(field, "email must look like name@example.com")
    return email


def parse_display_name(value: str, field: str = "display_name") -> str:
    name = " ".join(value.split())
    if not 1 <= len(name) <= DISPLAY_NAME_MAX:
        raise validation_error(field, f"display name must be 1 to {DISPLAY_NAME_MAX} characters")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise validation_error(field, "display name cannot contain control characters")
    return name


def check_password(password: str, email: str | None, field: str = "password") -> str:
    if len(password) < PASSWORD_MIN:
        raise validation_error(field, f"password must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise validation_error(field, f"password must be at most {PASSWORD_MAX} characters")
    if email is not None and password.strip().lower() == email.strip().lower():
        raise validation_error(field, "password cannot be the email address")
    return password


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str | None
    display_name: str
    role: Role
    disabled: bool
    created_at: datetime
    updated_at: datetime
    password_hash: str | None = None
    external_issuer: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as proven by a token; what they may do follows from ``role``."""

    user_id: UUID
    role: Role
    display_name: str
    via: str  # "access", "bot" or "external:<issuer>"
    expires_at: float | None  # epoch seconds; None for bot tokens (revocable instead)
