"""The clients of the configured backing services, opened once per app in its lifespan.

A service without a URL is simply absent; readiness checks only what is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from papo.persistence import mongo, postgres
from papo.persistence import redis as redis_adapter
from papo.persistence.s3 import S3Location, S3Storage
from papo.server.config import Settings

log = logging.getLogger("papo.resources")


@dataclass(slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    error: str | None = None


@dataclass(slots=True)
class Resources:
    pool: postgres.Pool | None = None
    redis: Redis | None = None
    mongo: AsyncMongoClient[dict[str, Any]] | None = None
    s3: S3Storage | None = None
    _checks: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        urls = settings.urls
        resources = cls()
        if urls.database:
            pool = resources.pool = await postgres.create_pool(urls.database)
            resources._checks["database"] = lambda: postgres.ping(pool)
        if urls.redis:
            redis = resources.redis = redis_adapter.connect_redis(urls.redis)
            resources._checks["redis"] = lambda: redis_adapter.ping(redis)
        if urls.mongo:
            client = resources.mongo = mongo.connect_mongo(urls.mongo)
            resources._checks["mongo"] = lambda: mongo.ping(client)
        if urls.s3:
            storage = resources.s3 = S3Storage(
                S3Location(
                    endpoint_url=urls.s3,
                    bucket=settings.s3.bucket,
                    region=settings.s3.region,
                    access_key_id=settings.s3.access_key_id,
                    secret_access_key=settings.s3.secret_access_key,
                )
            )
            resources._checks["s3"] = storage.ping
        return resources

    async def check(self, limit_seconds: float) -> dict[str, CheckResult]:
        """Run every configured check at once, each bounded by ``limit_seconds``."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n], limit_seconds) for n in names))
        return dict(zip(names, results, strict=True))

    @staticmethod
    async def _run(check: Callable[[], Awaitable[None]], limit_seconds: float) -> CheckResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(limit_seconds):
                await check()
        except TimeoutError:
            return CheckResult(
                False, _ms(loop.time() - started), f"timed out after {limit_seconds:g} s"
            )
        except Exception as exc:
            return CheckResult(False, _ms(loop.time() - started), f"{type(exc).__name__}: {exc}")
        return CheckResult(True, _ms(loop.time() - started))

    async def close(self) -> None:
        if self.pool is not None:
            try:
                async with asyncio.timeout(5):
                    await self.pool.close()
            except TimeoutError:
                self.pool.terminate()
        if self.redis is not None:
            await self.redis.aclose()
        if self.mongo is not None:
            await self.mongo.close()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
