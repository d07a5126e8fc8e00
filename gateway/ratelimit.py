"""Per-client rate limits: a token bucket in Redis, shared by every replica.

One atomic Lua script per request (EVALSHA, one round trip): it reads the bucket, refills it
from Redis ``TIME`` (so replicas with skewed clocks share one bucket correctly), takes a token
or computes how long until one is available, and writes the bucket back with an expiry.
Buckets are per client (``gw:rl:<client>``), so a client's several keys share its quota and a
key rotation does not double it. Each request costs one token, whatever its batch size.

Fail open: the limiter's Redis round trip is bounded by its own short timeout, and any Redis
error lets the request through and skips the limiter for ``fail_open_s`` (no per-request
timeout during an outage). Rate limiting protects capacity; it must not turn a Redis blip
into an outage of its own. Keys with a limit of 0 never reach this module.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.config import RateLimitSettings, RedisSettings
from gateway.store import open_redis

log = logging.getLogger(__name__)

BUCKET_PREFIX = "gw:rl:"

# KEYS[1] bucket; ARGV[1] tokens per second, ARGV[2] burst (bucket size).
# Returns {allowed (1/0), seconds until the next token (string: Lua numbers become integers)}.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RateLimiter:
    """Token buckets in Redis; ``acquire`` answers None (go) or the seconds to wait."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        fail_open_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script = client.register_script(TOKEN_BUCKET_LUA)
        self._fail_open_s = fail_open_s
        self._clock = clock
        self._skip_until = 0.0

    async def acquire(self, client_name: str, rate_per_s: float, burst: int) -> float | None:
        """Take one token from the client's bucket: None if allowed, else seconds to wait."""
        if rate_per_s <= 0:
            return None
        if self._skip_until and self._clock() < self._skip_until:
            return None
        try:
            allowed, wait = await self._script(
                keys=[BUCKET_PREFIX + client_name], args=[rate_per_s, max(1, burst)]
            )
        except (RedisError, OSError) as e:
            self._skip_until = self._clock() + self._fail_open_s
            log.warning(
                "rate limiter: Redis unavailable, failing open for %.1fs (%s)",
                self._fail_open_s,
                type(e).__name__,
            )
            return None
        self._skip_until = 0.0
        return None if int(allowed) == 1 else float(wait)


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds: round up, at least 1."""
    return max(1, math.ceil(wait_s))


@asynccontextmanager
async def open_rate_limiter(
    redis_settings: RedisSettings, settings: RateLimitSettings
) -> AsyncIterator[RateLimiter]:
    """The limiter's own small pool, with its own (shorter) timeouts than the feature store."""
    limiter_redis = redis_settings.model_copy(
        update={
            "socket_timeout_s": settings.timeout_s,
            "connect_timeout_s": settings.timeout_s,
            "max_connections": min(redis_settings.max_connections, 32),
        }
    )
    async with open_redis(limiter_redis) as client:
        yield RateLimiter(client, fail_open_s=settings.fail_open_s)
