"""Request ids, access logs and HTTP metrics for every HTTP request.

Written as plain ASGI middleware (not ``BaseHTTPMiddleware``) so streaming responses and
WebSockets pass through untouched and the id lives in the request's own context.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from papo.server.logs import context_id
from papo.server.metrics import Metrics

log = logging.getLogger("papo.http")

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
UNMATCHED_ROUTE = "unmatched"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[object, str]:
    """Endpoint -> path template, so metrics are labelled ``/api/users/{id}``, not ids."""
    templates: dict[object, str] = {}
    for route in routes:
        if isinstance(route, Mount):
            templates.update(route_templates(route.routes, prefix + route.path))
        elif isinstance(route, Route):
            templates[route.endpoint] = prefix + route.path
    return templates


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self._routes = list(routes)
        self._templates: dict[object, str] | None = None

    def _template(self, scope: Scope) -> str:
        if self._templates is None:
            self._templates = route_templates(self._routes)
        return self._templates.get(scope.get("endpoint"), UNMATCHED_ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else new_id("req")
        token = context_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.http_in_flight.dec()
            route = self._template(scope)
            method = scope["method"]
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(elapsed)
            log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={"status": status, "ms": round(elapsed * 1000, 2), "route": route},
            )
            context_id.reset(token)
