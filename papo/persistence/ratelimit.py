"""Rate limits: the port and its two adapters (Redis for many nodes, memory for one).

A fixed window per key: ``limit`` hits per ``window_seconds``. The answer says whether
the hit is allowed and, when not, how long until the window resets (``Retry-After``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("papo.ratelimit")


@dataclass(frozen=True, slots=True)
class Rate:
    limit: int
    window_seconds: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"10/60"``: ten hits per sixty seconds."""
        count, _, seconds = text.partition("/")
        rate = cls(int(count), int(seconds))
        if rate.limit < 1 or rate.window_seconds < 1:
            raise ValueError(text)
        return rate

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_seconds}"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int  # whole seconds, at least 1 when refused


class RateLimiter(Protocol):
    async def hit(self, key: str, rate: Rate) -> Verdict:
        """Count one hit against ``key``; atomic across every node sharing the store."""
        ...


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str, rate: Rate) -> Verdict:
        now = time.monotonic()
        if len(self._windows) > 100_000:  # bounded memory: drop expired windows
            self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        resets_at, count = self._windows.get(key, (0.0, 0))
        if resets_at <= now:
            resets_at, count = now + rate.window_seconds, 0
        count += 1
        self._windows[key] = (resets_at, count)
        return Verdict(count <= rate.limit, max(1, math.ceil(resets_at - now)))


_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""


class RedisRateLimiter:
    def __init__(self, redis: Redis, prefix: str = "papo:rl:") -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_HIT_SCRIPT)

    async def hit(self, key: str, rate: Rate) -> Verdict:
        try:
            count, ttl_ms = await self._script(
                keys=[self._prefix + key], args=[rate.window_seconds * 1000]
            )
        except RedisError as exc:
            # Fail open: an outage of the limiter must not lock every user out.
            log.warning("rate limiter unavailable, allowing", extra={"error": str(exc)})
            return Verdict(True, 0)
        return Verdict(int(count) <= rate.limit, max(1, math.ceil(int(ttl_ms) / 1000)))
