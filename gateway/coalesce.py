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
    """Nearly every computation has no follower, so a leader registers only its key: the
    future followers wait on is made by the first of them (a future, a done callback and a
    loop callback fewer per real-time miss)."""

    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[T] | None] = {}

    def join(self, key: Hashable) -> asyncio.Future[T] | None:
        """The in-flight computation for ``key``, if there is one."""
        if key not in self._inflight:
            return None
        future = self._inflight[key]
        if future is None:
            future = self._inflight[key] = asyncio.get_running_loop().create_future()
        return future

    def lead(self, key: Hashable) -> None:
        """Register a new computation; the caller must ``resolve`` or ``fail`` it."""
        self._inflight[key] = None

    def resolve(self, key: Hashable, value: T) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def fail(self, key: Hashable, error: BaseException) -> None:
        future = self._inflight.pop(key, None)
        if future is not None and not future.done():
            future.set_exception(error)
            # Its followers may all have given up: marked retrieved, asyncio stays quiet.
            future.exception()

    def __len__(self) -> int:
        return len(self._inflight)


def consume_outcome(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception retrieved: its waiters may all have given up, and asyncio
    would otherwise log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()
