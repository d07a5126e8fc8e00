"""TickBatcher: what shares a call, what does not, and how failures and cancellations spread."""

from __future__ import annotations

import asyncio

import pytest

from gateway import microbatch
from gateway.microbatch import TickBatcher


class Recorder:
    def __init__(self, *, fail: Exception | None = None, hold: asyncio.Event | None = None):
        self.calls: list[tuple[str, list[int]]] = []
        self.fail = fail
        self.hold = hold

    async def run(self, key: str, parts: list[int]) -> list[int]:
        self.calls.append((key, list(parts)))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return [part * 10 for part in parts]


def batcher(recorder: Recorder) -> TickBatcher[str, int, int]:
    return TickBatcher(recorder.run, cancelled=lambda: LookupError("shared call cancelled"))


async def test_parts_of_one_iteration_share_one_call_per_key() -> None:
    recorder = Recorder()
    b = batcher(recorder)
    results = await asyncio.gather(
        b.submit("a", 1), b.submit("a", 2), b.submit("b", 3), b.submit("a", 4)
    )
    assert results == [10, 20, 30, 40]
    assert sorted(recorder.calls) == [("a", [1, 2, 4]), ("b", [3])]


async def test_a_later_iteration_gets_its_own_call() -> None:
    recorder = Recorder()
    b = batcher(recorder)
    assert await b.submit("a", 1) == 10
    assert await b.submit("a", 2) == 20
    assert recorder.calls == [("a", [1]), ("a", [2])]


async def test_an_error_reaches_every_part() -> None:
    recorder = Recorder(fail=ConnectionError("down"))
    b = batcher(recorder)
    results = await asyncio.gather(b.submit("a", 1), b.submit("a", 2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert len(recorder.calls) == 1


async def test_a_caller_giving_up_does_not_cancel_the_shared_call() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = batcher(recorder)
    impatient = asyncio.ensure_future(b.submit("a", 1))
    patient = asyncio.ensure_future(b.submit("a", 2))
    await asyncio.sleep(0.01)  # the call has started and waits on `hold`
    impatient.cancel()
    await asyncio.sleep(0)
    hold.set()
    assert await patient == 20
    assert impatient.cancelled()
    assert recorder.calls == [("a", [1, 2])]


async def test_a_part_cancelled_before_the_flush_is_left_out() -> None:
    recorder = Recorder()
    b = batcher(recorder)
    gone = asyncio.ensure_future(b.submit("a", 1))
    kept = asyncio.ensure_future(b.submit("a", 2))
    await asyncio.sleep(0)  # both registered; the flush is due next iteration
    gone.cancel()
    assert await kept == 20
    assert recorder.calls == [("a", [2])]


async def test_a_cancelled_shared_call_is_the_callers_declared_error() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = batcher(recorder)
    waiter = asyncio.ensure_future(b.submit("a", 1))
    await asyncio.sleep(0.01)
    for call in list(b._calls):
        call.cancel()
    with pytest.raises(LookupError, match="shared call cancelled"):
        await waiter


async def test_a_run_returning_the_wrong_count_fails_loudly() -> None:
    async def short(key: str, parts: list[int]) -> list[int]:
        return parts[:-1]

    b: TickBatcher[str, int, int] = TickBatcher(short, cancelled=lambda: LookupError())
    results = await asyncio.gather(b.submit("a", 1), b.submit("a", 2), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_drain_waits_for_calls_in_flight() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = batcher(recorder)
    waiter = asyncio.ensure_future(b.submit("a", 1))
    await asyncio.sleep(0.01)
    assert len(b) == 1
    asyncio.get_running_loop().call_later(0.02, hold.set)
    await b.drain(timeout_s=2)
    assert len(b) == 0
    assert await waiter == 10


async def test_disabled_every_part_is_its_own_call() -> None:
    recorder = Recorder()
    b = TickBatcher(recorder.run, cancelled=lambda: LookupError(), enabled=False)
    assert await asyncio.gather(b.submit("a", 1), b.submit("a", 2)) == [10, 20]
    assert recorder.calls == [("a", [1]), ("a", [2])]


async def test_a_part_posted_alone_gets_its_own_call() -> None:
    recorder = Recorder()
    b = batcher(recorder)
    results = await asyncio.gather(b.submit("a", 1), b.submit("a", 2, alone=True), b.submit("a", 3))
    assert results == [10, 20, 30]
    assert sorted(recorder.calls) == [("a", [1, 3]), ("a", [2])]


class Outcomes:
    """A ``settled`` hook: what each part's dependants were told."""

    def __init__(self) -> None:
        self.told: list[int | BaseException] = []

    def __call__(self, outcome: int | BaseException) -> None:
        self.told.append(outcome)


async def test_a_part_others_depend_on_goes_into_the_call_after_its_caller_gave_up() -> None:
    recorder = Recorder()
    b = batcher(recorder)
    told = Outcomes()
    gone = b.post("a", 1, settled=told)
    kept = b.post("a", 2)
    gone.cancel()  # the caller's deadline passed before the flush
    assert await kept == 20
    assert recorder.calls == [("a", [1, 2])]
    assert told.told == [10]
    assert gone.cancelled()


async def test_dependants_are_told_a_failed_or_cancelled_call() -> None:
    recorder = Recorder(fail=ConnectionError("down"))
    b = batcher(recorder)
    told = Outcomes()
    with pytest.raises(ConnectionError):
        await b.post("a", 1, settled=told)
    assert [type(t) for t in told.told] == [ConnectionError]
    # A call cancelled before it ever ran (shutdown) still tells them: the caller's error.
    told = Outcomes()
    part = b.post("a", 2, settled=told)
    await asyncio.sleep(0)  # flushed: the call task exists and has not run yet
    for call in list(b._calls):
        call.cancel()
    with pytest.raises(LookupError, match="shared call cancelled"):
        await part
    assert [str(t) for t in told.told] == ["shared call cancelled"]


async def test_a_hook_that_raises_keeps_no_other_part_from_its_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(outcome: int | BaseException) -> None:
        raise KeyError("bookkeeping bug")

    recorder = Recorder()
    b = batcher(recorder)
    told = Outcomes()
    first = b.post("a", 1, settled=broken)
    second = b.post("a", 2, settled=told)
    assert await asyncio.wait_for(asyncio.gather(first, second), timeout=2) == [10, 20]
    assert told.told == [20]
    assert "settled hook failed" in caplog.text


@pytest.mark.parametrize("how", ["alone", "disabled"])
async def test_a_call_of_its_own_outlives_its_callers_cancellation_when_others_depend(
    how: str,
) -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = TickBatcher(recorder.run, cancelled=lambda: LookupError(), enabled=how != "disabled")
    told = Outcomes()
    part = b.post("a", 7, alone=how == "alone", settled=told)
    await asyncio.sleep(0.01)  # the call has started and waits on `hold`
    part.cancel()
    await asyncio.sleep(0)
    hold.set()
    await b.drain(timeout_s=2)
    assert told.told == [70]
    assert recorder.calls == [("a", [7])]


def windowed(recorder: Recorder, window_s: float) -> TickBatcher[str, int, int]:
    return TickBatcher(
        recorder.run, cancelled=lambda: LookupError("shared call cancelled"), window_s=window_s
    )


async def made_within_iterations(recorder: Recorder, call: tuple[str, list[int]]) -> bool:
    """Whether ``call`` starts within a few event-loop iterations (a tick flush), not later."""
    for _ in range(3):
        await asyncio.sleep(0)
    return recorder.calls[-1:] == [call]


async def test_a_quiet_key_does_not_wait_for_its_window() -> None:
    recorder = Recorder()
    b = windowed(recorder, 0.2)
    part = b.post("a", 1)
    assert await made_within_iterations(recorder, ("a", [1]))
    assert await part == 10


async def test_a_busy_key_holds_its_batch_open_for_the_window() -> None:
    recorder = Recorder()
    b = windowed(recorder, 0.2)
    loop = asyncio.get_running_loop()
    # Forty parts at once: the key's mean gap (from 1 s, weighted 0.05) falls under the
    # window, so it is busy; the first of them found it quiet, so these still go after this
    # iteration.
    parts = list(range(1, 41))
    assert await asyncio.gather(*(b.submit("a", n) for n in parts)) == [n * 10 for n in parts]
    start = loop.time()
    first = b.post("a", 41)
    await asyncio.sleep(0.05)
    assert not first.done()
    assert recorder.calls == [("a", parts)]
    second = b.post("a", 42)
    assert await asyncio.gather(first, second) == [410, 420]
    assert loop.time() - start >= 0.15
    assert recorder.calls == [("a", parts), ("a", [41, 42])]


async def test_a_key_whose_parts_come_further_apart_than_the_window_does_not_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parts 30 ms apart with a 20 ms window: a wait would expect less than one companion,
    so every part goes at once. The mean is the last gap alone here (weight 1), so that a
    few parts show the rule; a late timer only widens the gaps."""
    monkeypatch.setattr(microbatch, "_GAP_WEIGHT", 1.0)
    recorder = Recorder()
    b = windowed(recorder, 0.02)
    assert await b.post("a", 0) == 0  # its gap from the key's creation is 0: it may wait
    for n in range(1, 6):
        await asyncio.sleep(0.03)
        part = b.post("a", n)
        assert await made_within_iterations(recorder, ("a", [n])), f"part {n} was held"
        assert await part == n * 10


async def test_a_part_with_little_time_pulls_the_flush_forward() -> None:
    recorder = Recorder()
    b = windowed(recorder, 10.0)  # busy from the first part on: any gap is under 20 s
    loop = asyncio.get_running_loop()
    start = loop.time()
    patient = b.post("a", 1)
    hurried = b.post("a", 2, wait_s=0.05)
    assert await asyncio.gather(patient, hurried) == [10, 20]
    assert loop.time() - start < 2.0
    assert recorder.calls == [("a", [1, 2])]
    # The bound also holds for the part that opens the batch, and a negative one means now.
    start = loop.time()
    assert await b.post("a", 3, wait_s=-1.0) == 30
    assert await b.post("a", 4, wait_s=0.05) == 40
    assert loop.time() - start < 2.0


async def test_drain_makes_the_call_of_a_batch_still_open() -> None:
    recorder = Recorder()
    b = windowed(recorder, 10.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    part = b.post("a", 1)
    await b.drain(5.0)
    assert part.done()
    assert part.result() == 10
    assert loop.time() - start < 2.0
    # Its timer was cancelled with the flush: a later batch of the key is not cut short.
    await asyncio.sleep(0)
    assert recorder.calls == [("a", [1])]


async def test_a_key_that_went_quiet_stops_waiting() -> None:
    recorder = Recorder()
    b = windowed(recorder, 0.02)
    # Busy: many parts at once drive the mean gap towards 0 ...
    await asyncio.gather(*(b.submit("a", n) for n in range(100)))
    busy = b.post("a", 98)
    assert not await made_within_iterations(recorder, ("a", [98]))
    assert await busy == 980
    # ... and one long gap (0.8 s, weighted 0.05) lifts it over the window.
    await asyncio.sleep(0.8)
    quiet = b.post("a", 99)
    assert await made_within_iterations(recorder, ("a", [99]))
    assert await quiet == 990


def calling(recorder: Recorder, window_s: float) -> TickBatcher[str, int, int]:
    """A batcher whose key is busy while one of its calls is in flight (the infer rule)."""
    return TickBatcher(
        recorder.run,
        cancelled=lambda: LookupError("shared call cancelled"),
        window_s=window_s,
        max_calls=1,
    )


async def test_a_key_with_no_call_out_sends_at_the_tick_however_fast_its_parts_come() -> None:
    recorder = Recorder()
    b = calling(recorder, 10.0)
    parts = list(range(1, 41))
    assert await asyncio.gather(*(b.submit("a", n) for n in parts)) == [n * 10 for n in parts]
    # Forty parts at once would make the key busy by its pace; with no call out, the next
    # part has nothing to wait for.
    part = b.post("a", 41)
    assert await made_within_iterations(recorder, ("a", [41]))
    assert await part == 410
    assert recorder.calls == [("a", parts), ("a", [41])]


async def test_parts_that_come_while_the_call_is_out_go_together_when_it_ends() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = calling(recorder, 10.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = b.post("a", 1)
    await asyncio.sleep(0.01)  # its call has started and waits on `hold`
    held = [b.post("a", 2)]
    await asyncio.sleep(0.01)
    held.append(b.post("a", 3))
    held.append(b.post("b", 4))  # another key has no call out: it goes at once
    await asyncio.sleep(0.05)
    assert recorder.calls == [("a", [1]), ("b", [4])]
    hold.set()
    assert await first == 10
    assert await made_within_iterations(recorder, ("a", [2, 3]))
    assert await asyncio.gather(*held) == [20, 30, 40]
    assert loop.time() - start < 2.0  # not the 10 s window


async def test_a_held_batch_goes_at_the_end_of_its_window_or_its_wait_with_the_call_still_out() -> (
    None
):
    hold = asyncio.Event()
    recorder = Recorder(hold=hold)
    b = calling(recorder, 0.05)
    first = b.post("a", 1)
    await asyncio.sleep(0.01)
    second = b.post("a", 2)
    await asyncio.sleep(0.1)
    assert recorder.calls == [("a", [1]), ("a", [2])]  # the window ended, call 1 is still out
    # Two calls are out now; a hurried part does not wait for either of them.
    third = b.post("a", 3, wait_s=0.0)
    assert await made_within_iterations(recorder, ("a", [3]))
    hold.set()
    assert await asyncio.gather(first, second, third) == [10, 20, 30]
    await b.drain(1.0)
    assert b._in_flight == {}


async def test_a_failed_call_still_releases_the_batch_held_behind_it() -> None:
    hold = asyncio.Event()
    recorder = Recorder(hold=hold, fail=ConnectionError("down"))
    b = calling(recorder, 10.0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = b.post("a", 1)
    await asyncio.sleep(0.01)
    second = b.post("a", 2)
    await asyncio.sleep(0.01)
    assert recorder.calls == [("a", [1])]
    hold.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert recorder.calls == [("a", [1]), ("a", [2])]
    assert loop.time() - start < 2.0  # released by the failure, not by the 10 s window
