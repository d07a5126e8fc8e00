"""Tick batching: calls submitted close together run as one call.

Under load many requests become ready in the same iteration of the event loop (their bytes
arrived in the same ``select``). Each would otherwise pay its own Redis pipeline and its own
Triton gRPC call, whose fixed Python cost dominates a request's CPU. The first submission for a
key schedules a flush with ``call_soon``, which runs after every callback already due in this
iteration: requests that are ready together are served together, and a lone request waits for
nothing but the rest of the current iteration (no timer, no added latency to speak of).

At a moderate rate requests rarely become ready in the same iteration, so every one pays a
call of its own: a lone real-time miss cost the gateway ~1.7 ms of CPU and Triton ~1 ms, and at
500 misses/s that filled the machine (docs/measurements.md). A batcher with a ``window_s``
therefore holds a batch open for up to that long, but only while its key is busy. Two rules
say when a key is busy:

* ``max_calls=None`` (the pace): the recent parts of the key arrived on average at most
  ``window_s`` apart (an exponentially weighted mean of the gaps), so that a wait can expect
  at least one more part for company. A quiet key keeps the tick flush and its latency.
* ``max_calls=N`` (calls in flight): N calls of the key are in flight. The held batch gathers
  what arrives meanwhile and goes as soon as one of those calls ends (or at the window's end).
  A key with no call out sends at the tick: nobody waits for company that may not come. Under
  a closed loop (each client sends again only after its answer) the pace reads every wave as
  busy and held each one for the whole window although all its companions were already in
  it; this rule holds a batch only while there is something to wait for (docs/measurements.md:
  +28% misses/s at 32 connections, and still over half of the window's CPU saving at 2,000
  misses/s in open loop).

A part never waits past its own ``wait_s`` (the service passes half of what the caller's
deadline leaves): it pulls the batch's flush forward.

The combined call runs as its own task, so a caller that gives up (deadline, disconnect)
cancels only its own wait, never the call the others share. A part that others depend on
(the rows a request leads for identical misses) is posted with a ``settled`` hook: it still
goes into the call after its caller gave up, and the hook hands them the outcome. Its caller
then owns its future and may cancel it, which costs less than a wait that must not touch it.

A combined call's spans would land in the first submitter's trace only, so a sampled request
(tracing on) is not batched: it gets calls of its own and a complete trace, including the
``traceparent`` sent to Triton (service.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar, cast

from gateway.coalesce import consume_outcome

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

Run = Callable[[K, list[P]], Coroutine[Any, Any, list[R]]]
"""Runs the parts gathered for one key; returns one result per part, in order."""
Settled = Callable[[R | BaseException], None]
"""Told a part's outcome (its result, or the call's error) whatever became of its future."""

_GAP_WEIGHT = 0.05
"""Weight of the newest gap in a key's mean gap: about the last forty parts count, so that
the waves of a closed-loop load (a burst, then a pause while its answers travel) read as the
rate they average to, not as quiet spells. One long gap still makes a key quiet at once."""
_MAX_GAP_S = 1.0
"""Gaps are capped here, so one idle spell makes a key quiet without poisoning its mean."""


class _Batch(Generic[P, R]):
    __slots__ = ("flush_at", "handle", "held", "parts")

    def __init__(
        self, flush_at: float, handle: asyncio.TimerHandle | asyncio.Handle, held: bool = False
    ) -> None:
        self.parts: list[tuple[P, asyncio.Future[R], Settled[R] | None]] = []
        self.flush_at = flush_at
        self.handle = handle
        self.held = held
        """Opened by a busy key (a timer, not the tick)."""


class _Pace:
    """When a key's last part came, and the weighted mean gap between its parts."""

    __slots__ = ("last", "mean_gap")

    def __init__(self, now: float) -> None:
        self.last = now
        self.mean_gap = _MAX_GAP_S

    def note(self, now: float) -> float:
        gap = min(now - self.last, _MAX_GAP_S)
        self.last = now
        self.mean_gap += _GAP_WEIGHT * (gap - self.mean_gap)
        return self.mean_gap


class TickBatcher(Generic[K, P, R]):
    def __init__(
        self,
        run: Run[K, P, R],
        *,
        cancelled: Callable[[], Exception],
        enabled: bool = True,
        window_s: float = 0.0,
        max_calls: int | None = None,
    ) -> None:
        """``cancelled`` makes the error the callers get when the shared call is cancelled
        (shutdown): a CancelledError would read as their own cancellation. ``enabled=False``:
        every part is its own call, made at once (a baseline to measure against).
        ``window_s``: how long a busy key's batch may stay open (0: one iteration only).
        ``max_calls``: a key is busy while this many of its calls are in flight, and its held
        batch goes when one of them ends; None: while its parts come at most ``window_s``
        apart (the module's docstring)."""
        self._run = run
        self._cancelled = cancelled
        self._enabled = enabled
        self._window_s = window_s
        self._pending: dict[K, _Batch[P, R]] = {}
        self._paces: dict[K, _Pace] = {}
        self._max_calls = max_calls
        self._in_flight: dict[K, int] = {}
        """Calls per key made by ``_launch`` and not ended yet (counted with ``max_calls``)."""
        self._calls: set[asyncio.Task[list[R]]] = set()

    async def submit(self, key: K, part: P, *, alone: bool = False) -> R:
        return await self.post(key, part, alone=alone)

    def post(
        self,
        key: K,
        part: P,
        *,
        alone: bool = False,
        wait_s: float | None = None,
        settled: Settled[R] | None = None,
    ) -> asyncio.Future[R]:
        """The part's result, as a future: callers that must not cancel it (it may be shared
        further) wait with ``gateway.waits.within(..., shared=True)`` or pass ``settled``,
        fire-and-forget callers add a done callback. No task is created:
        at tens of thousands of requests a second, a task per request is a visible cost.

        ``alone``: this part gets a call of its own, made at once in the caller's context
        (a sampled request, so that its trace holds its own Redis and Triton spans).
        ``wait_s``: the longest this part may wait for company (None: the window decides).
        ``settled``: others depend on this part's outcome. It is called with it when the
        call ends, even if the future was cancelled by then: the caller owns the future and
        may cancel it (a deadline), and the part still goes into the call."""
        loop = asyncio.get_running_loop()
        if alone or not self._enabled:
            if settled is None:
                return loop.create_task(self._run_one(key, part))
            # The caller's cancellation must not reach a call that others depend on.
            own: asyncio.Future[R] = loop.create_future()
            self._launch(key, [(part, own, settled)])
            return own
        future: asyncio.Future[R] = loop.create_future()
        batch = self._pending.get(key)
        window = self._window_s
        if window > 0:
            now = loop.time()
            if self._max_calls is not None:
                busy = self._in_flight.get(key, 0) >= self._max_calls
            else:
                pace = self._paces.get(key)
                if pace is None:
                    pace = self._paces[key] = _Pace(now)
                busy = pace.note(now) <= window
            if batch is None:
                wait = window if busy else 0.0
                if wait_s is not None:
                    wait = min(wait, wait_s)
                handle = (
                    loop.call_at(now + wait, self._flush, key)
                    if wait > 0
                    else loop.call_soon(self._flush, key)
                )
                batch = self._pending[key] = _Batch(now + wait, handle, held=wait > 0)
            elif wait_s is not None and now + wait_s < batch.flush_at:
                batch.handle.cancel()
                batch.flush_at = now + max(wait_s, 0.0)
                batch.handle = loop.call_at(batch.flush_at, self._flush, key)
        elif batch is None:
            batch = self._pending[key] = _Batch(0.0, loop.call_soon(self._flush, key))
        batch.parts.append((part, future, settled))
        return future

    async def _run_one(self, key: K, part: P) -> R:
        return (await self._run(key, [part]))[0]

    def _flush(self, key: K) -> None:
        batch = self._pending.pop(key, None)
        if batch is None:
            return
        batch.handle.cancel()  # when flushed early (drain), its timer must not fire later
        # Parts whose caller already gave up are dropped before the call is made, unless
        # others depend on their outcome.
        pending = [
            (part, future, settled)
            for part, future, settled in batch.parts
            if settled is not None or not future.done()
        ]
        if pending:
            self._launch(key, pending)

    def _launch(self, key: K, parts: list[tuple[P, asyncio.Future[R], Settled[R] | None]]) -> None:
        """The parts' call, as a task of its own that settles them when it ends."""
        call = asyncio.get_running_loop().create_task(self._run(key, [p for p, _, _ in parts]))
        self._calls.add(call)
        settle = [(f, settled) for _, f, settled in parts]
        if self._max_calls is None:
            call.add_done_callback(lambda done: self._settle(done, settle))
            return
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        call.add_done_callback(lambda done: self._ended(key, done, settle))

    def _ended(
        self,
        key: K,
        call: asyncio.Task[list[R]],
        parts: list[tuple[asyncio.Future[R], Settled[R] | None]],
    ) -> None:
        """A call of a key counted in flight (``max_calls``) ended."""
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
        else:
            del self._in_flight[key]
        self._settle(call, parts)
        batch = self._pending.get(key)
        # What came while the call was out has gathered; the window would only add wait.
        if batch is not None and batch.held and left < cast(int, self._max_calls):
            self._flush(key)

    def _settle(
        self,
        call: asyncio.Task[list[R]],
        parts: list[tuple[asyncio.Future[R], Settled[R] | None]],
    ) -> None:
        self._calls.discard(call)
        error: BaseException | None = self._cancelled() if call.cancelled() else call.exception()
        if error is None:
            results = call.result()
            if len(results) != len(parts):
                error = RuntimeError(f"{len(results)} results for {len(parts)} parts")
            else:
                for (future, settled), result in zip(parts, results, strict=True):
                    if settled is not None:
                        _tell(settled, result)
                    if not future.done():
                        future.set_result(result)
                return
        for future, settled in parts:
            if settled is not None:
                _tell(settled, error)
            if not future.done():
                future.set_exception(error)
                future.add_done_callback(consume_outcome)

    async def drain(self, timeout_s: float) -> None:
        """Make the calls still gathering now, then wait for the calls in flight (shutdown,
        tests)."""
        for key in list(self._pending):
            self._flush(key)
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=timeout_s)

    def __len__(self) -> int:
        return len(self._calls)


def _tell(settled: Settled[R], outcome: R | BaseException) -> None:
    """One hook's failure must not keep the call's other parts from their outcomes."""
    try:
        settled(outcome)
    except Exception:
        log.exception("a batch part's settled hook failed")
