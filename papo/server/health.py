"""Operations endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from papo import __version__
from papo.server.resources import CheckResult
from papo.server.responses import json_response
from papo.server.state import app_state


async def healthz(request: Request) -> Response:
    """Alive: the event loop answers. Never touches a backing service."""
    return json_response({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """Ready: every configured service answered within the readiness timeout."""
    state = app_state(request)
    results = await state.resources.check(state.settings.readiness_timeout)
    failing = sorted(name for name, result in results.items() if not result.ok)
    for name, result in results.items():
        state.metrics.readiness.labels(name).set(1 if result.ok else 0)
    body = {
        "status": "unavailable" if failing else "ok",
        "failing": failing,
        "services": {
            name: {
                "ok": r.ok,
                "latency_ms": r.latency_ms,
                **({"error": r.error} if r.error else {}),
            }
            for name, r in results.items()
        },
    }
    return json_response(body, status=503 if failing else 200)


def _describe(result: CheckResult) -> dict[str, object]:
    described: dict[str, object] = {"ok": result.ok, "latency_ms": result.latency_ms}
    if result.error:
        described["error"] = result.error
    return described


async def metrics(request: Request) -> Response:
    return Response(
        app_state(request).metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
