"""The arq worker consumes papo's queue and reports its health."""

from __future__ import annotations

import asyncio

from arq import create_pool
from arq.connections import RedisSettings

from papo.workers.settings import QUEUE_NAME, build_worker, worker_is_healthy


async def test_worker_runs_queued_jobs_and_reports_health(service_urls: dict[str, str]) -> None:
    redis_url = service_urls["redis"]
    worker = build_worker(redis_url, handle_signals=False)
    running = asyncio.create_task(worker.async_run())
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE_NAME)
    try:
        job = await pool.enqueue_job("probe", "ping")
        assert job is not None
        result = await job.result(timeout=15)
        assert result["payload"] == "ping"
        assert ":" in result["worker"]
        assert await worker_is_healthy(redis_url)
    finally:
        await pool.aclose()
        await worker.close()
        await asyncio.gather(running, return_exceptions=True)
    assert not await worker_is_healthy(redis_url)
