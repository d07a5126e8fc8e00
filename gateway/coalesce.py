"""Request coalescing: concurrent misses for the same entity share one Triton call.

A key names one computation (model, version, entity, event time of its stored features);
the first request to need it leads and the rest await the leader's result. The computation
runs as its own task, so a leader whose client goes away does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T]] = {}

    def join(self, key: Hashable) -> asyncio.Future[T] | None:
        """The in-flight computation for ``key``, if there is one."""
        return self._inflight.get(key)

    def lead(self, key: Hashable) -> asyncio.Future[T]:
        """Register a new computation; the caller must ``resolve`` or ``fail`` it."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        # Followers may all have given up: mark the outcome retrieved so asyncio stays quiet.
        future.add_done_callback(consume_outcome)
        self._inflight[key] = future
        return future

    def resolve(self, key: Hashable, value: T) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def fail(self, key: Hashable, error: BaseException) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_exception(error)

    def __len__(self) -> int:
        return len(self._inflight)


def consume_outcome(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved: its waiters may all have given up, and asyncio
    would otherwise log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()
