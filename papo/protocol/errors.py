"""The one error vocabulary of papo, shared by REST answers and WebSocket replies.

Every error has a stable machine ``code`` clients may switch on, a human ``message``,
and for validation errors the ``field`` path of the offending input. Codes are never
renamed; new ones are added. ``http_status`` is how REST renders each code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class ErrorCode(StrEnum):
    # Input (4xx): the request is wrong; retrying it unchanged fails again.
    INVALID_JSON = "invalid_json"
    VALIDATION_FAILED = "validation_failed"
    UNKNOWN_TYPE = "unknown_type"
    BINARY_FRAME = "binary_frame"
    NOT_A_MEMBER = "not_a_member"
    TOO_MANY_ROOMS = "too_many_rooms"
    MESSAGE_TOO_LONG = "message_too_long"
    NOT_AUTHENTICATED = "not_authenticated"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    EMAIL_TAKEN = "email_taken"
    CANNOT_MODIFY_SELF = "cannot_modify_self"
    # Authentication (401) and authorisation (403).
    TOKEN_MISSING = "token_missing"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    INVALID_CREDENTIALS = "invalid_credentials"
    REFRESH_TOKEN_INVALID = "refresh_token_invalid"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    ACCOUNT_DISABLED = "account_disabled"
    FORBIDDEN = "forbidden"
    # Load and availability: retrying later may succeed.
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.UNKNOWN_TYPE: 400,
    ErrorCode.BINARY_FRAME: 400,
    ErrorCode.NOT_A_MEMBER: 403,
    ErrorCode.TOO_MANY_ROOMS: 409,
    ErrorCode.MESSAGE_TOO_LONG: 422,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.EMAIL_TAKEN: 409,
    ErrorCode.CANNOT_MODIFY_SELF: 409,
    ErrorCode.TOKEN_MISSING: 401,
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.REFRESH_TOKEN_INVALID: 401,
    ErrorCode.REFRESH_TOKEN_REUSED: 401,
    ErrorCode.ACCOUNT_DISABLED: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class PapoError(Exception):
    """An error a client is meant to see. Anything else is a bug and answers 500."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


def validation_error(field: str, message: str) -> PapoError:
    return PapoError(ErrorCode.VALIDATION_FAILED, message, field=field)


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: ErrorCode
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    """What every failed REST request answers."""

    error: ErrorDetail
