"""Micro-batch accumulation: a batch closes when it is full or its time is up.

``MicroBatcher`` is the pure policy (clock passed in); ``fill`` drives it with a blocking read
such as XREADGROUP: while a batch is open the read blocks at most until the batch's deadline,
so a lone event waits ``max_wait`` at most, and under load reads return at once with whatever
is queued, so batches fill to ``max_size`` without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    items: list[T]
    wait_s: float
    """From the first item's arrival to the batch's close."""
    reason: str
    """``size``, ``time``, ``window`` (the in-flight window is full) or ``stop``."""


class MicroBatcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1 or max_wait_s < 0:
            raise ValueError("max_size must be >= 1 and max_wait_s >= 0")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._opened_at: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def room(self) -> int:
        return self.max_size - len(self._items)

    def add(self, items: Sequence[T], now: float) -> None:
        if not items:
            return
        if len(items) > self.room:
            raise ValueError(f"{len(items)} items do not fit (room for {self.room})")
        if not self._items:
            self._opened_at = now
        self._items.extend(items)

    def remaining_s(self, now: float) -> float | None:
        """Time left before the open batch is due; None when no batch is open."""
        if self._opened_at is None:
            return None
        return max(0.0, self._opened_at + self.max_wait_s - now)

    def due(self, now: float) -> str | None:
        """Why the open batch must close now (``size`` / ``time``), or None."""
        if not self._items:
            return None
        if len(self._items) >= self.max_size:
            return "size"
        remaining = self.remaining_s(now)
        return "time" if remaining is not None and remaining <= 0 else None

    def take(self, now: float, reason: str) -> Batch[T]:
        items, opened_at = self._items, self._opened_at
        self._items, self._opened_at = [], None
        return Batch(items, 0.0 if opened_at is None else now - opened_at, reason)


ReadFn = Callable[[int, int | None], Awaitable[Sequence[T]]]
"""``read(count, block_ms)``: up to ``count`` items; ``block_ms`` None = do not block."""


async def fill(
    batcher: MicroBatcher[T],
    read: ReadFn[T],
    *,
    capacity: Callable[[], int],
    idle_block_ms: int,
    stopping: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
) -> Batch[T]:
    """Read until the batch is due; returns it (possibly empty when stopping or no capacity).

    ``capacity()`` is how many more items the caller may hold (the in-flight window). With no
    capacity left an open batch closes at once (reason ``window``): it cannot grow anyway.
    """
    while True:
        now = clock()
        reason = batcher.due(now)
        if reason is not None:
            return batcher.take(now, reason)
        if stopping():
            return batcher.take(now, "stop")
        count = min(batcher.room, capacity())
        if count <= 0:
            return batcher.take(now, "window")
        remaining = batcher.remaining_s(now)
        if remaining is None:
            block_ms: int | None = idle_block_ms
        else:
            remaining_ms = remaining * 1000.0
            # XREADGROUP blocks in whole milliseconds; under one, just take what is there.
            # (Rounded to the microsecond first: 4.999999 ms of float noise is 5 ms, not 6.)
            # Never longer than the idle block, so a stop request is seen that quickly.
            block_ms = (
                min(math.ceil(round(remaining_ms, 3)), idle_block_ms)
                if remaining_ms >= 1.0
                else None
            )
        items = await read(count, block_ms)
        batcher.add(items, clock())
        if not items and remaining is None:
            return batcher.take(clock(), "idle")
