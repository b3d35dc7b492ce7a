"""The browser pages papo serves itself: the chat client at ``/`` and the dashboard.

They are static files from ``papo/web`` (no build step). The pages get a strict
Content-Security-Policy: scripts and styles only from papo itself, no inline code, so
text from users can never run as script even if a rendering bug slipped through.
"""

from __future__ import annotations

from importlib import resources as package_files

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

WEB_DIR = str(package_files.files("papo.web"))

# 'self' in connect-src covers ws:// and wss:// to the same host and port.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _page(path: str, file_name: str) -> Route:
    async def serve(request: Request) -> Response:
        return FileResponse(f"{WEB_DIR}/{file_name}", headers=PAGE_HEADERS)

    return Route(path, serve, methods=["GET"])


routes: list[BaseRoute] = [
    _page("/", "index.html"),
    _page("/dashboard", "dashboard.html"),
    Mount("/static", app=StaticFiles(directory=WEB_DIR), name="static"),
]
