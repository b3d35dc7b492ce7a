"""The Starlette app: the composition root where config turns into running parts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from papo.hub.tasks import shutdown_step
from papo.persistence.ratelimit import MemoryRateLimiter, RedisRateLimiter
from papo.server import health, pages
from papo.server.config import Settings
from papo.server.errors import handle_http_exception, handle_unexpected
from papo.server.metrics import Metrics
from papo.server.middleware import RequestContextMiddleware
from papo.server.openapi import build_openapi
from papo.server.realtime import build_realtime
from papo.server.resources import Resources
from papo.server.rest import route
from papo.server.routes import accounts, publishing
from papo.server.state import AppState
from papo.server.wiring import build_auth

log = logging.getLogger("papo.server")


async def openapi(request: Request) -> Response:
    return Response(OPENAPI_BYTES, media_type="application/json")


API_ENDPOINTS = [*accounts.endpoints, *publishing.endpoints]
OPENAPI_BYTES = orjson.dumps(build_openapi(API_ENDPOINTS))


def create_app(settings: Settings) -> Starlette:
    """Build the app; raises ``ConfigError`` before any I/O if the settings cannot work."""
    metrics = Metrics()
    auth = build_auth(settings) if settings.urls.database else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resources = await Resources.open(settings)
        accounts = auth.service(resources.pool) if auth and resources.pool else None
        realtime = build_realtime(settings, resources, accounts, metrics.registry)
        app.state.papo = AppState(
            settings=settings,
            metrics=metrics,
            resources=resources,
            rate_limiter=(
                RedisRateLimiter(resources.redis) if resources.redis else MemoryRateLimiter()
            ),
            account_service=accounts,
            realtime=realtime,
        )
        await realtime.hub.start()
        log.info(
            "papo ready",
            extra={"services": sorted(settings.urls.configured())},
        )
        try:
            yield
        finally:
            # uvicorn has already told WebSocket clients to reconnect elsewhere (1012);
            # flush what is queued so every acknowledged message is on disk. Every step
            # is bounded: a backing service that stopped answering must not hold up a
            # rolling restart, so a step that overruns is logged and skipped.
            drain = settings.http.drain_seconds
            step = max(1.0, drain)
            await shutdown_step(realtime.hub.drain(drain), 2 * drain + step, "drain")
            await realtime.hub.stop(step)
            await shutdown_step(resources.close(), step, "closing backing services")

    routes: list[BaseRoute] = [
        *health.routes,
        Route("/api/openapi.json", openapi, methods=["GET"]),
        *(route(endpoint) for endpoint in API_ENDPOINTS),
        *pages.routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestContextMiddleware, metrics=metrics, routes=routes)],
        exception_handlers={
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
