"""``papo dev``: one node, its worker and any missing backing service, in one command.

Engines are started before the event loop and stopped after it, in a ``finally`` that
also runs on Ctrl-C and SIGTERM, so nothing started here outlives the command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path

from papo.server.app import create_app
from papo.server.config import LogSettings, Settings
from papo.server.embedded import EmbeddedServices
from papo.server.embedded.launcher import SERVICE_NAMES
from papo.server.logs import configure_logging
from papo.server.prepare import prepare_services
from papo.server.runner import RunningServer, start_in_loop
from papo.workers.settings import build_worker

log = logging.getLogger("papo.dev")


def dev_settings(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Readable logs unless asked otherwise, and a JWT secret kept in the data dir."""
    if "PAPO_LOG_FORMAT" not in env:
        settings = dataclasses.replace(
            settings, log=LogSettings(level=settings.log.level, format="text")
        )
    if not settings.auth.jwt_secret:
        settings = dataclasses.replace(
            settings,
            auth=dataclasses.replace(settings.auth, jwt_secret=_dev_secret(settings.data_dir)),
        )
    return settings


def _dev_secret(data_dir: Path) -> str:
    path = data_dir / "jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def run_dev(settings: Settings, env: Mapping[str, str]) -> int:
    settings = dev_settings(settings, env)
    configure_logging(settings.log)
    configured = settings.urls.configured()
    missing = [name for name in SERVICE_NAMES if name not in configured]
    engines = EmbeddedServices(settings.data_dir, missing, durable=True)
    try:
        if missing:
            log.info("starting embedded services: %s", ", ".join(missing))
        settings = settings.with_urls(**engines.start())
        asyncio.run(_run(settings))
    finally:
        engines.stop()
        log.info("papo dev stopped")
    return 0


def _banner(url: str, settings: Settings) -> str:
    lines = ["", "papo dev is running", f"  papo      {url}  (chat at /, health at /readyz)"]
    for name, service_url in settings.urls.configured().items():
        lines.append(f"  {name:<9} {service_url}")
    lines += [f"  data      {settings.data_dir.resolve()}", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _request_exit(server: RunningServer) -> None:
    if server.server.should_exit:
        server.server.force_exit = True
    server.server.should_exit = True


async def _run(settings: Settings) -> None:
    await prepare_services(settings)
    server = await start_in_loop(create_app(settings), settings)
    worker = (
        build_worker(settings.urls.redis, handle_signals=False) if settings.urls.redis else None
    )
    worker_task = asyncio.create_task(worker.async_run()) if worker else None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # First signal: drain and stop in order. The server task then ends by itself.
        loop.add_signal_handler(signum, _request_exit, server)
    print(_banner(f"http://{settings.http.host}:{server.port}", settings), flush=True)
    try:
        await server.task
    finally:
        if worker is not None and worker_task is not None:
            await worker.close()
            await asyncio.gather(worker_task, return_exceptions=True)
