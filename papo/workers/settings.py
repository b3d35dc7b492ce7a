"""Builds the arq worker from papo's settings (one queue per deployment)."""

from __future__ import annotations

import os
import socket
from typing import Any

from arq.connections import RedisSettings
from arq.constants import health_check_key_suffix
from arq.worker import Worker

from papo.persistence.redis import connect_redis
from papo.workers import jobs

QUEUE_NAME = "papo:queue"
HEALTH_CHECK_SECONDS = 10
HEALTH_KEY = QUEUE_NAME + health_check_key_suffix


def job_functions() -> list[Any]:
    return [jobs.probe]


def build_worker(redis_url: str, *, handle_signals: bool) -> Worker:
    name = f"{socket.gethostname()}:{os.getpid()}"
    return Worker(
        functions=job_functions(),
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(redis_url),
        handle_signals=handle_signals,
        health_check_interval=HEALTH_CHECK_SECONDS,
        health_check_key=HEALTH_KEY,
        max_tries=5,
        ctx={"worker_name": name},
    )


async def worker_is_healthy(redis_url: str) -> bool:
    """A worker refreshes its health key every few seconds; arq expires it after that."""
    client = connect_redis(redis_url)
    try:
        return bool(await client.exists(HEALTH_KEY))
    finally:
        await client.aclose()
