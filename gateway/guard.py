"""The admission path every API request passes before any work, on both transports.

In order, each step cheaper than the next:

1. shed: at most ``limits.max_in_flight`` API requests per process (REST and gRPC share one
   counter: one event loop, one process); beyond it ``Overloaded`` (503 / RESOURCE_EXHAUSTED)
   at once, never a queue;
2. authenticate the API key (``Unauthenticated``, 401) and check the model against the key's
   allow-list (``PermissionDenied``, 403);
3. rate-limit the client (``RateLimited``, 429 with Retry-After from its bucket); a key with
   limit 0 costs no Redis call.

``gateway.api.middleware`` (REST, pure ASGI) and ``gateway.api.grpc_guard`` (gRPC interceptor)
are the thin transport adapters. The lifespan owns the guard's I/O (``running``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.auth import ANONYMOUS, KeyRing, Principal
from gateway.config import Settings
from gateway.errors import Overloaded, RateLimited
from gateway.ratelimit import RateLimiter, open_rate_limiter, retry_after_s

log = logging.getLogger(__name__)


class InFlightLimit:
    """A per-process bound on concurrent requests; ``try_acquire`` never waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """0 = no bound."""
        self.in_flight = 0

    def try_acquire(self) -> bool:
        if self.limit and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1


class Guard:
    """Shedding, authentication, authorization and rate limiting, transport-neutral."""

    def __init__(self, settings: Settings, keyring: KeyRing | None) -> None:
        self.in_flight = InFlightLimit(settings.limits.max_in_flight)
        self.keyring = keyring
        """None when auth is explicitly disabled: every caller is ANONYMOUS."""
        self.rate_limiter: RateLimiter | None = None
        """Set while ``running``; None before start-up and after shutdown."""
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        """Loads the keys file now: a missing or invalid one stops start-up (KeysFileError)."""
        if not settings.auth.enabled:
            log.warning("API key authentication is DISABLED (GATEWAY_AUTH__ENABLED=false)")
            return cls(settings, None)
        return cls(settings, KeyRing.load(settings.auth, settings.rate_limit))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Guard]:
        """The rate limiter's Redis pool and the keys-file watcher, for the app's lifetime."""
        async with open_rate_limiter(self._settings.redis, self._settings.rate_limit) as limiter:
            self.rate_limiter = limiter
            watcher = None
            if self.keyring is not None:
                watcher = asyncio.create_task(
                    self._watch_keys(self.keyring, self._settings.auth.reload_interval_s)
                )
            try:
                yield self
            finally:
                self.rate_limiter = None
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher

    def overloaded(self) -> Overloaded:
        """Step 1's answer (a new instance: a raised exception keeps its traceback)."""
        error = Overloaded("the gateway is at its in-flight request limit; retry shortly")
        error.retry_after_s = self._settings.limits.retry_after_s
        return error

    def authenticate(self, presented_key: str | None, model: str | None) -> Principal:
        """Step 2: the caller's principal, allowed to use ``model`` (when the call names one)."""
        if self.keyring is None:
            return ANONYMOUS
        principal = self.keyring.authenticate(presented_key)
        if model is not None:
            principal.check_model(model)
        return principal

    async def check_rate(self, principal: Principal) -> None:
        """Step 3: one token from the client's bucket, or RateLimited with its wait."""
        if principal.rate_per_s <= 0 or self.rate_limiter is None:
            return
        wait_s = await self.rate_limiter.acquire(
            principal.client, principal.rate_per_s, principal.burst
        )
        if wait_s is not None:
            raise RateLimited(
                f"client rate limit of {principal.rate_per_s:g} requests/s exceeded",
                retry_after_s=retry_after_s(wait_s),
            )

    @staticmethod
    async def _watch_keys(keyring: KeyRing, interval_s: float) -> None:
        # A stat every few seconds, off the request path; the read runs in a thread.
        while True:
            await asyncio.sleep(interval_s)
            try:
                update = await asyncio.to_thread(keyring.read_if_changed)
                if update is not None:
                    keyring.apply(update)
            except Exception:  # never let the watcher die: rotation would silently stop
                log.exception("API keys file check failed")
