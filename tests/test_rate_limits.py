"""Login and register are rate-limited per IP and per account, shared through Redis."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from papo.persistence.ratelimit import MemoryRateLimiter, Rate, RateLimiter, RedisRateLimiter
from papo.server.app import create_app
from papo.server.config import Settings
from papo.server.runner import start_in_loop
from tests.conftest import register_and_login, unique_email


@pytest.fixture
async def limited_settings(base_settings: Settings) -> Settings:
    """Tight limits, on a Redis database of their own so other tests' hits do not count."""
    assert base_settings.urls.redis
    redis_url = base_settings.urls.redis.rsplit("/", 1)[0] + "/7"
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    auth = dataclasses.replace(
        base_settings.auth,
        rate_login_ip="8/60",
        rate_login_account="3/60",
        rate_register_ip="2/60",
    )
    return dataclasses.replace(base_settings.with_urls(redis=redis_url), auth=auth)


@pytest.fixture
async def limited_http(limited_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    running = await start_in_loop(create_app(limited_settings), limited_settings)
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            yield client
    finally:
        await running.stop()


async def test_brute_force_on_one_account_gets_429_with_retry_after(
    http: httpx.AsyncClient, limited_http: httpx.AsyncClient
) -> None:
    victim = await register_and_login(http, prefix="bruteforced")
    answers = [
        await limited_http.post(
            "/api/auth/login", json={"email": victim.email, "password": f"guess {n:08d}"}
        )
        for n in range(4)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Even the right password waits: the account is locked for the window, not the attacker.
    right = await limited_http.post(
        "/api/auth/login", json={"email": victim.email, "password": victim.password}
    )
    assert right.status_code == 429


async def test_one_ip_is_limited_across_accounts(limited_http: httpx.AsyncClient) -> None:
    statuses = [
        (
            await limited_http.post(
                "/api/auth/login", json={"email": unique_email(), "password": "whatever 123"}
            )
        ).status_code
        for _ in range(9)
    ]
    assert statuses[:8] == [401] * 8
    assert statuses[8] == 429


async def test_registration_is_limited_per_ip(limited_http: httpx.AsyncClient) -> None:
    statuses = []
    for _ in range(3):
        response = await limited_http.post(
            "/api/auth/register",
            json={"email": unique_email(), "password": "a long passphrase", "display_name": "R"},
        )
        statuses.append(response.status_code)
    assert statuses == [201, 201, 429]


async def test_refusals_are_counted_in_metrics(limited_http: httpx.AsyncClient) -> None:
    for _ in range(3):
        await limited_http.post(
            "/api/auth/register",
            json={"email": unique_email(), "password": "a long passphrase", "display_name": "R"},
        )
    metrics = (await limited_http.get("/metrics")).text
    assert 'papo_rate_limited_total{limit="register_ip"} 1.0' in metrics
    assert 'papo_api_errors_total{code="rate_limited"} 1.0' in metrics


@pytest.fixture(params=["memory", "redis"])
async def limiter(
    request: pytest.FixtureRequest, service_urls: dict[str, str]
) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    client = Redis.from_url(service_urls["redis"])
    yield RedisRateLimiter(client, prefix=f"test:{secrets.token_hex(4)}:")
    await client.aclose()


async def test_limiter_contract(limiter: RateLimiter) -> None:
    rate = Rate(limit=2, window_seconds=30)
    verdicts = [await limiter.hit("k", rate) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert 1 <= verdicts[-1].retry_after <= 30
    assert (await limiter.hit("other", rate)).allowed, "keys are independent"


def test_rates_parse_from_text() -> None:
    assert Rate.parse("10/60") == Rate(10, 60)
    for bad in ("0/60", "10/0", "ten/60", "10"):
        with pytest.raises(ValueError, match=r"."):
            Rate.parse(bad)
