"""Declarative REST endpoints: one definition drives routing, validation, auth and docs.

An ``Endpoint`` names its body, query and response types (msgspec Structs), the
permission it needs and the errors it may answer; ``route()`` turns it into a Starlette
route and ``papo.server.openapi`` into its OpenAPI operation, so the two cannot drift.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from papo.domains.accounts.model import Identity
from papo.domains.accounts.permissions import Permission, require
from papo.protocol import codec
from papo.protocol.errors import ErrorCode, PapoError, validation_error
from papo.server.auth import bearer_token
from papo.server.errors import error_response
from papo.server.state import AppState, app_state

MAX_BODY_BYTES = 64 * 1024
Auth = Literal["public", "user"] | Permission
UUID_PARAM: dict[str, Any] = {"type": "string", "format": "uuid"}
ROOM_PARAM: dict[str, Any] = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,80}$"}


@dataclass(slots=True)
class Call:
    """Everything a handler may use; built once per request."""

    request: Request
    state: AppState
    identity: Identity | None
    body: Any
    query: Any

    @property
    def user(self) -> Identity:
        assert self.identity is not None, "endpoint declared auth='public'"
        return self.identity

    @property
    def client_ip(self) -> str:
        return self.request.client.host if self.request.client else "unknown"

    def path_uuid(self, name: str) -> uuid.UUID:
        try:
            return uuid.UUID(self.request.path_params[name])
        except ValueError:
            raise validation_error(name, f"{name} must be a UUID") from None


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "public"
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[ErrorCode, ...] = ()
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def all_errors(self) -> list[ErrorCode]:
        implied: list[ErrorCode] = [ErrorCode.INTERNAL_ERROR, ErrorCode.UNAVAILABLE]
        if self.body is not None:
            implied += [ErrorCode.INVALID_JSON, ErrorCode.VALIDATION_FAILED]
        if self.query is not None or self.path_params:
            implied.append(ErrorCode.VALIDATION_FAILED)
        if self.auth != "public":
            implied += [
                ErrorCode.TOKEN_MISSING,
                ErrorCode.TOKEN_INVALID,
                ErrorCode.TOKEN_EXPIRED,
                ErrorCode.ACCOUNT_DISABLED,
            ]
        if isinstance(self.auth, Permission):
            implied.append(ErrorCode.FORBIDDEN)
        return list(dict.fromkeys([*implied, *self.errors]))


async def _identify(endpoint: Endpoint, request: Request, state: AppState) -> Identity | None:
    if endpoint.auth == "public":
        return None
    token = bearer_token(request.headers)
    if token is None:
        raise PapoError(ErrorCode.TOKEN_MISSING, "send 'Authorization: Bearer <token>'")
    identity = await state.accounts.authenticate(token)
    if isinstance(endpoint.auth, Permission):
        require(identity, endpoint.auth)
    return identity


async def _read_body(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.body is None:
        return None
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_BODY_BYTES:
        raise validation_error("", f"the body may be at most {MAX_BODY_BYTES} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise validation_error("", f"the body may be at most {MAX_BODY_BYTES} bytes")
    return codec.decode(raw, endpoint.body)


def _read_query(endpoint: Endpoint, request: Request) -> Any:
    if endpoint.query is None:
        return None
    return codec.convert(dict(request.query_params), endpoint.query)


def route(endpoint: Endpoint) -> Route:
    async def endpoint_app(request: Request) -> Response:
        state = app_state(request)
        try:
            identity = await _identify(endpoint, request, state)
            call = Call(
                request=request,
                state=state,
                identity=identity,
                body=await _read_body(endpoint, request),
                query=_read_query(endpoint, request),
            )
            result = await endpoint.handler(call)
        except PapoError as error:
            state.metrics.api_errors.labels(error.code.value).inc()
            return error_response(error)
        if endpoint.status == 204:
            return Response(status_code=204)
        return Response(
            codec.encode(result), status_code=endpoint.status, media_type="application/json"
        )

    endpoint_app.__name__ = endpoint.handler.__name__
    return Route(endpoint.path, endpoint_app, methods=[endpoint.method])
