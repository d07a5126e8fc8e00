"""gateway.ratelimit against a real redis-server: the Lua token bucket, sharing, failing open."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from devstack.redis_server import RedisServer
from gateway.config import RateLimitSettings, RedisSettings
from gateway.ratelimit import BUCKET_PREFIX, open_rate_limiter, retry_after_s
from triton_launcher.ports import free_port

pytestmark = pytest.mark.integration


def client_name() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


async def test_burst_passes_then_the_wait_is_computed_from_the_rate(
    redis_server: RedisServer,
) -> None:
    name = client_name()
    async with open_rate_limiter(RedisSettings(url=redis_server.url), RateLimitSettings()) as rl:
        answers = [await rl.acquire(name, 2.0, 3) for _ in range(4)]

    assert answers[:3] == [None, None, None]
    wait = answers[3]
    assert wait is not None
    assert 0.3 < wait <= 0.5  # one token per 0.5 s, a few ms already refilled
    assert retry_after_s(wait) == 1


async def test_bucket_refills_from_redis_time(redis_server: RedisServer) -> None:
    name = client_name()
    async with open_rate_limiter(RedisSettings(url=redis_server.url), RateLimitSettings()) as rl:
        assert await rl.acquire(name, 20.0, 1) is None
        assert await rl.acquire(name, 20.0, 1) is not None
        await asyncio.sleep(0.06)
        assert await rl.acquire(name, 20.0, 1) is None


async def test_two_limiters_share_one_bucket_like_two_replicas(redis_server: RedisServer) -> None:
    name = client_name()
    settings = RedisSettings(url=redis_server.url)
    async with (
        open_rate_limiter(settings, RateLimitSettings()) as replica_a,
        open_rate_limiter(settings, RateLimitSettings()) as replica_b,
    ):
        assert await replica_a.acquire(name, 1.0, 2) is None
        assert await replica_b.acquire(name, 1.0, 2) is None
        assert await replica_a.acquire(name, 1.0, 2) is not None
        assert await replica_b.acquire(name, 1.0, 2) is not None


async def test_bucket_expires_once_it_would_be_full_again(redis_server: RedisServer) -> None:
    import redis

    name = client_name()
    async with open_rate_limiter(RedisSettings(url=redis_server.url), RateLimitSettings()) as rl:
        await rl.acquire(name, 10.0, 5)
    ttl_ms = redis.Redis.from_url(redis_server.url).pttl(BUCKET_PREFIX + name)
    assert 0 < ttl_ms <= 5 / 10 * 1000 + 1000


async def test_unreachable_redis_fails_open_fast_and_is_skipped_for_a_while() -> None:
    dead = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    settings = RateLimitSettings(timeout_s=0.05, fail_open_s=30)
    async with open_rate_limiter(dead, settings) as rl:
        started = time.perf_counter()
        first = await rl.acquire(client_name(), 1.0, 1)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        later = [await rl.acquire(client_name(), 1.0, 1) for _ in range(100)]
        later_s = time.perf_counter() - started

    assert first is None
    assert first_s < 0.5
    assert later == [None] * 100
    assert later_s < 0.05  # no Redis attempt while failing open


async def test_limit_zero_never_calls_redis() -> None:
    dead = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_rate_limiter(dead, RateLimitSettings(fail_open_s=0)) as rl:
        assert await rl.acquire(client_name(), 0.0, 1) is None
        assert rl._skip_until == 0.0  # no failure recorded: Redis was not tried
