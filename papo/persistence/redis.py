"""Redis client construction shared by the broker, presence, caches and rate limits."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect_redis(url: str, *, timeout: float = 5.0) -> Redis:
    """A lazily connecting client that retries dropped connections with backoff."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=3),
        health_check_interval=30,
    )
    return client


async def ping(client: Redis) -> None:
    await client.ping()
