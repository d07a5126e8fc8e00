"""Waiting for a future under a deadline, for less than ``asyncio.timeout`` costs.

A predict request waits under its own deadline for futures it may share with others: an
identical miss's outcome that another request leads. An ``asyncio.timeout`` scope (a timer,
then a task cancellation to make and to undo) around an ``asyncio.shield`` (a second future
and two callbacks) costs ~18 µs per wait on uvloop; a shared wait here costs ~7 µs: one timer
and one done-callback (docs/measurements.md).

A future the caller owns (its part of a tick batch's Redis lookup, its part of a Triton call,
whose followers the batcher tells even if it is cancelled) needs neither: the caller awaits it
directly, and its deadline goes into a per-loop table of millisecond ticks, each with one
timer that cancels whatever of that tick is still pending. At thousands of requests a second
most waits share a tick with others, so a wait costs a set insertion and removal instead of a
timer, a waiter future and a done-callback (and the extra loop callback that handed the
outcome over). A tick nobody waits in any more has its timer cancelled (the newest one once a
newer tick is made), so an idle loop is not woken a deadline later for nobody.
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from typing import Any, TypeVar

T = TypeVar("T")

_TICK_S = 0.001
"""Resolution of owned deadlines: a wait ends within a millisecond after its own."""


async def within(future: asyncio.Future[T], timeout_s: float | None, *, shared: bool) -> T:
    """``future``'s outcome, or TimeoutError once ``timeout_s`` passes first (None: no bound).

    ``shared``: others depend on ``future``, so neither the timeout nor the caller's own
    cancellation touches it (``asyncio.shield``). Otherwise the caller owns it, and both
    cancel it (as a timeout scope around ``await future`` would)."""
    if future.done():
        return future.result()
    if not shared:
        if timeout_s is None:
            return await future
        loop = asyncio.get_running_loop()
        table = _expiries(loop)
        due = table.add(loop, future, timeout_s)
        try:
            return await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                raise TimeoutError from None  # its tick cancelled it, not the caller
            raise
        finally:
            table.leave(due, future)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake = functools.partial(_wake, waiter)
    timer = None if timeout_s is None else loop.call_later(timeout_s, wake, None)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        future.remove_done_callback(wake)
    if not future.done():
        raise TimeoutError
    return future.result()


class _Tick:
    """The owned futures whose deadline falls in one millisecond tick, and its timer (weakly:
    the loop holds an armed timer, and a strong reference here would keep a closed loop alive
    through its table)."""

    __slots__ = ("futures", "tick", "timer")

    def __init__(self, tick: int, timer: asyncio.TimerHandle) -> None:
        self.futures: set[asyncio.Future[Any]] = set()
        self.tick = tick
        self.timer = weakref.ref(timer)


class _Expiries:
    """Owned futures by the millisecond tick their deadline falls in, for one loop (which it
    does not reference: the table is kept in a mapping weakly keyed by its loop)."""

    __slots__ = ("_due", "_newest")

    def __init__(self) -> None:
        self._due: dict[int, _Tick] = {}
        self._newest: _Tick | None = None

    def add(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], timeout_s: float
    ) -> _Tick:
        """The tick ``future`` joined; the caller leaves it once the future is done."""
        tick = math.ceil((loop.time() + timeout_s) / _TICK_S)
        due = self._due.get(tick)
        if due is None:
            newest = self._newest
            if newest is not None and not newest.futures:
                self._drop(newest)
            timer = loop.call_at(tick * _TICK_S, self._expire, tick)
            due = self._due[tick] = self._newest = _Tick(tick, timer)
        due.futures.add(future)
        return due

    def leave(self, due: _Tick, future: asyncio.Future[Any]) -> None:
        """``future`` is done. The last to leave a tick cancels its timer, unless it is the
        newest tick, which later waits of the same millisecond may still join: it goes when a
        newer tick is made. At a moderate rate nearly every wait has a tick of its own, and a
        timer left to fire for nobody would wake an idle loop once per request."""
        futures = due.futures
        futures.discard(future)
        if not futures and due is not self._newest:
            self._drop(due)

    def _drop(self, due: _Tick) -> None:
        """Forget a tick nobody waits in any more, and cancel its timer."""
        if self._due.get(due.tick) is due:
            del self._due[due.tick]
            timer = due.timer()
            if timer is not None:
                timer.cancel()
        if self._newest is due:
            self._newest = None

    def _expire(self, tick: int) -> None:
        due = self._due.pop(tick, None)
        if due is None:
            return
        if self._newest is due:
            self._newest = None
        for future in due.futures:
            future.cancel()

    def __len__(self) -> int:
        """Futures still registered (tests)."""
        return sum(len(due.futures) for due in self._due.values())

    def timers(self) -> int:
        """Ticks whose timer is still armed (tests)."""
        return len(self._due)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Expiries] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], _Expiries] | None = None
"""The last loop asked for and its table: nearly always the one loop of the process, found
without the weak mapping's Python-level lookup."""


def _expiries(loop: asyncio.AbstractEventLoop) -> _Expiries:
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        return last[1]
    expiries = _by_loop.get(loop)
    if expiries is None:
        expiries = _by_loop[loop] = _Expiries()
    _last = (weakref.ref(loop), expiries)
    return expiries


def _wake(waiter: asyncio.Future[None], _: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)
