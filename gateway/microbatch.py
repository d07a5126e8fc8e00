"""Tick batching: calls submitted within one event-loop iteration run as one call.

Under load many requests become ready in the same iteration of the event loop (their bytes
arrived in the same ``select``). Each would otherwise pay its own Redis pipeline and its own
Triton gRPC call, whose fixed Python cost dominates a request's CPU. The first submission for a
key schedules a flush with ``call_soon``, which runs after every callback already due in this
iteration: requests that are ready together are served together, and a lone request waits for
nothing but the rest of the current iteration (no timer, no added latency to speak of).

The combined call runs as its own task, so a caller that gives up (deadline, disconnect)
cancels only its own wait, never the call the others share. Its spans would land in the first
submitter's trace only, so a sampled request (tracing on) is not batched: it gets calls of its
own and a complete trace, including the ``traceparent`` sent to Triton (service.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from gateway.coalesce import consume_outcome

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")
R = TypeVar("R")

Run = Callable[[K, list[P]], Coroutine[Any, Any, list[R]]]
"""Runs the parts gathered for one key; returns one result per part, in order."""


class TickBatcher(Generic[K, P, R]):
    def __init__(
        self, run: Run[K, P, R], *, cancelled: Callable[[], Exception], enabled: bool = True
    ) -> None:
        """``cancelled`` makes the error the callers get when the shared call is cancelled
        (shutdown): a CancelledError would read as their own cancellation. ``enabled=False``:
        every part is its own call, made at once (a baseline to measure against)."""
        self._run = run
        self._cancelled = cancelled
        self._enabled = enabled
        self._pending: dict[K, list[tuple[P, asyncio.Future[R]]]] = {}
        self._calls: set[asyncio.Task[list[R]]] = set()

    async def submit(self, key: K, part: P, *, alone: bool = False) -> R:
        return await self.post(key, part, alone=alone)

    def post(self, key: K, part: P, *, alone: bool = False) -> asyncio.Future[R]:
        """The part's result, as a future: callers that must not cancel it (it may be shared
        further) shield it, fire-and-forget callers add a done callback. No task is created:
        at tens of thousands of requests a second, a task per request is a visible cost.

        ``alone``: this part gets a call of its own, made at once in the caller's context
        (a sampled request, so that its trace holds its own Redis and Triton spans)."""
        loop = asyncio.get_running_loop()
        if alone or not self._enabled:
            return loop.create_task(self._run_one(key, part))
        future: asyncio.Future[R] = loop.create_future()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = []
            loop.call_soon(self._flush, key)
        pending.append((part, future))
        return future

    async def _run_one(self, key: K, part: P) -> R:
        return (await self._run(key, [part]))[0]

    def _flush(self, key: K) -> None:
        # Parts whose caller already gave up are dropped before the call is made.
        pending = [(part, f) for part, f in self._pending.pop(key, ()) if not f.done()]
        if not pending:
            return
        call = asyncio.get_running_loop().create_task(self._run(key, [p for p, _ in pending]))
        self._calls.add(call)
        call.add_done_callback(lambda done: self._settle(done, [f for _, f in pending]))

    def _settle(self, call: asyncio.Task[list[R]], futures: list[asyncio.Future[R]]) -> None:
        self._calls.discard(call)
        error: BaseException | None = self._cancelled() if call.cancelled() else call.exception()
        if error is None:
            results = call.result()
            if len(results) != len(futures):
                error = RuntimeError(f"{len(results)} results for {len(futures)} parts")
            else:
                for future, result in zip(futures, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                return
        for future in futures:
            if not future.done():
                future.set_exception(error)
                future.add_done_callback(consume_outcome)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the combined calls in flight (shutdown, tests)."""
        if self._pending:
            await asyncio.sleep(0)  # their flush is due in the next iteration
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=timeout_s)

    def __len__(self) -> int:
        return len(self._calls)
