"""One error shape for every REST answer: ``{"error": {"code", "message", "field"?}}``.

Handlers raise ``PapoError``; Starlette's own 404/405 and unexpected exceptions are
rendered in the same shape, so a client parses errors one way only.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from papo.protocol import codec
from papo.protocol.errors import HTTP_STATUS, ErrorCode, PapoError

log = logging.getLogger("papo.http")

_CODE_FOR_STATUS = {status: code for code, status in reversed(HTTP_STATUS.items())}


def error_response(error: PapoError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(error.retry_after)))
    if error.http_status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{error.code.value}"'
    return Response(
        codec.encode({"error": error.as_dict()}),
        status_code=error.http_status,
        headers=headers,
        media_type="application/json",
    )


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODE_FOR_STATUS.get(exc.status_code, ErrorCode.INTERNAL_ERROR)
    return error_response(PapoError(code, str(exc.detail)), dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(PapoError(ErrorCode.INTERNAL_ERROR, "papo hit an unexpected error"))
