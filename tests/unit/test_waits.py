"""within(): a deadline on a future, and what a timeout or a cancellation does to that future."""

from __future__ import annotations

import asyncio

import pytest

from gateway.waits import within


def pending() -> asyncio.Future[int]:
    return asyncio.get_running_loop().create_future()


async def test_a_done_future_answers_at_once() -> None:
    future = pending()
    future.set_result(7)
    assert await within(future, 0.0, shared=True) == 7


async def test_the_result_or_the_error_arrives_before_the_timeout() -> None:
    for shared in (True, False):
        future = pending()
        asyncio.get_running_loop().call_later(0.01, future.set_result, 3)
        assert await within(future, 5.0, shared=shared) == 3
        failing = pending()
        asyncio.get_running_loop().call_later(0.01, failing.set_exception, LookupError("x"))
        with pytest.raises(LookupError):
            await within(failing, 5.0, shared=shared)


async def test_no_timeout_waits_for_the_outcome() -> None:
    for shared in (True, False):
        future = pending()
        asyncio.get_running_loop().call_later(0.05, future.set_result, 4)
        assert await within(future, None, shared=shared) == 4


async def test_a_timeout_cancels_an_owned_future() -> None:
    future = pending()
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        await within(future, 0.05, shared=False)
    assert 0.04 <= loop.time() - start < 2.0
    assert future.cancelled()


async def test_a_timeout_leaves_a_shared_future_to_the_others() -> None:
    future = pending()
    with pytest.raises(TimeoutError):
        await within(future, 0.05, shared=True)
    assert not future.done()
    future.set_result(5)  # the others still get it; no callback of the waiter is left over
    assert await within(future, None, shared=True) == 5


@pytest.mark.parametrize("shared", [True, False])
async def test_the_callers_cancellation_reaches_only_an_owned_future(shared: bool) -> None:
    future = pending()
    waiting = asyncio.get_running_loop().create_task(within(future, 5.0, shared=shared))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert future.cancelled() is not shared


async def test_owned_waits_time_out_each_at_its_own_deadline() -> None:
    loop = asyncio.get_running_loop()
    futures = [pending() for _ in range(3)]
    start = loop.time()

    async def wait(future: asyncio.Future[int], timeout_s: float) -> float:
        with pytest.raises(TimeoutError):
            await within(future, timeout_s, shared=False)
        return loop.time() - start

    short, same, long = await asyncio.gather(
        wait(futures[0], 0.03), wait(futures[1], 0.03), wait(futures[2], 0.09)
    )
    assert 0.029 <= short < 0.08
    assert 0.029 <= same < 0.08
    assert 0.089 <= long < 0.5
    assert all(f.cancelled() for f in futures)


async def test_an_owned_wait_that_ends_leaves_nothing_registered() -> None:
    from gateway.waits import _expiries

    loop = asyncio.get_running_loop()
    for n in range(50):
        future = pending()
        loop.call_later(0.001 * (n % 3), future.set_result, n)
        assert await within(future, 5.0, shared=False) == n
    failing = pending()
    loop.call_soon(failing.set_exception, LookupError("x"))
    with pytest.raises(LookupError):
        await within(failing, 5.0, shared=False)
    assert len(_expiries(asyncio.get_running_loop())) == 0
    # Nor a timer, but the newest tick's (later waits of its millisecond may join it): left
    # armed, each would wake an idle loop a deadline later for nobody.
    assert _expiries(asyncio.get_running_loop()).timers() <= 1


def test_a_tick_nobody_waits_in_has_its_timer_cancelled() -> None:
    from gateway.waits import _expiries

    async def waits() -> None:
        loop = asyncio.get_running_loop()
        table = _expiries(loop)
        soon, later = pending(), pending()
        waiting = [
            asyncio.ensure_future(within(soon, 0.5, shared=False)),
            asyncio.ensure_future(within(later, 5.0, shared=False)),
        ]
        await asyncio.sleep(0)
        assert table.timers() == 2
        soon.set_result(1)
        assert await waiting[0] == 1
        # Not the newest tick: nobody else can join it, so its timer goes at once.
        assert table.timers() == 1
        later.set_result(2)
        assert await waiting[1] == 2
        # The newest stays armed for waits of its millisecond, until a newer tick is made.
        assert table.timers() == 1
        newer = pending()
        loop.call_soon(newer.set_result, 3)
        assert await within(newer, 2.0, shared=False) == 3
        assert table.timers() == 1
        assert len(table) == 0

    loop = asyncio.new_event_loop()  # a table of its own
    try:
        loop.run_until_complete(waits())
    finally:
        loop.close()


def test_a_loops_deadline_table_does_not_keep_the_loop_alive() -> None:
    import gc
    import weakref

    loop = asyncio.new_event_loop()

    async def wait_once() -> int:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, 1)
        return await within(future, 5.0, shared=False)

    try:
        assert loop.run_until_complete(wait_once()) == 1
    finally:
        loop.close()
    gone = weakref.ref(loop)
    del loop
    gc.collect()
    assert gone() is None
