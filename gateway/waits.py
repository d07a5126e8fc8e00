"""Waiting for a future under a deadline, for less than ``asyncio.timeout`` costs.

A predict request waits under its own deadline for futures it may share with others: its part
of a tick batch's Redis lookup, a Triton call whose rows other requests follow. An
``asyncio.timeout`` scope (a timer, then a task cancellation to make and to undo) around an
``asyncio.shield`` (a second future and two callbacks) costs ~18 µs per wait on uvloop; this
costs ~7 µs: one timer and one done-callback (docs/measurements.md). A miss waits twice.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, TypeVar

T = TypeVar("T")


async def within(future: asyncio.Future[T], timeout_s: float | None, *, shared: bool) -> T:
    """``future``'s outcome, or TimeoutError once ``timeout_s`` passes first (None: no bound).

    ``shared``: others depend on ``future``, so neither the timeout nor the caller's own
    cancellation touches it (``asyncio.shield``). Otherwise the caller owns it, and both
    cancel it (as a timeout scope around ``await future`` would)."""
    if future.done():
        return future.result()
    if timeout_s is None and not shared:
        return await future
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    timer = None if timeout_s is None else loop.call_later(timeout_s, wake, None)
    future.add_done_callback(wake)
    try:
        await waiter
    except BaseException:  # the caller's own cancellation
        if not shared:
            future.cancel()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        future.remove_done_callback(wake)
    if not future.done():
        if not shared:
            future.cancel()
        raise TimeoutError
    return future.result()


def _wake(waiter: asyncio.Future[None], _: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)
