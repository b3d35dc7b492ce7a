"""Shared fixtures: real services started once per session, a real papo per test.

Set ``PAPO_TEST_DATABASE_URL``, ``PAPO_TEST_REDIS_URL``, ``PAPO_TEST_MONGO_URL`` or
``PAPO_TEST_S3_URL`` to use services you run yourself; the rest are started by the same
launcher ``papo dev`` uses, on random loopback ports, and stopped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from papo.server.app import create_app
from papo.server.config import Settings
from papo.server.embedded import EmbeddedServices
from papo.server.embedded.launcher import SERVICE_NAMES
from papo.server.prepare import prepare_services
from papo.server.runner import RunningServer, start_in_loop

TEST_JWT_SECRET = secrets.token_urlsafe(48)


@pytest.fixture(scope="session")
def service_urls() -> Iterator[dict[str, str]]:
    given = {
        name: url
        for name in SERVICE_NAMES
        if (url := os.environ.get(f"PAPO_TEST_{name.upper()}_URL"))
    }
    missing = [name for name in SERVICE_NAMES if name not in given]
    data_dir = Path(tempfile.mkdtemp(prefix="papo-test-"))
    data_dir.chmod(0o755)  # PostgreSQL runs as another user when we are root
    engines = EmbeddedServices(data_dir, missing, durable=False)
    try:
        urls = {**given, **engines.start()}
        yield urls
    finally:
        engines.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def base_settings(service_urls: dict[str, str]) -> Settings:
    env = {
        "PAPO_HOST": "127.0.0.1",
        "PAPO_PORT": "0",
        "PAPO_JWT_SECRET": TEST_JWT_SECRET,
        "PAPO_DATABASE_URL": service_urls["database"],
        "PAPO_REDIS_URL": service_urls["redis"],
        "PAPO_MONGO_URL": service_urls["mongo"],
        "PAPO_S3_URL": service_urls["s3"],
        "PAPO_LOG_LEVEL": "WARNING",
        "PAPO_DRAIN_SECONDS": "1",
    }
    settings = Settings.from_env(env)
    await prepare_services(settings)
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return base_settings


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    """A real papo on a random loopback port, in the test's event loop."""
    running = await start_in_loop(create_app(settings), settings)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client
