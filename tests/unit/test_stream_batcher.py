"""Micro-batch thresholds: size reached first, time reached first, window, idle, stop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.stream.batcher import Batch, MicroBatcher, fill


class FakeStream:
    """A blocking read over a scripted arrival schedule, on a fake clock.

    ``arrivals`` are (time_s, item) pairs. A read returns the items that have arrived (up to
    ``count``); if none has, it blocks until the next arrival or until ``block_ms`` passes.
    """

    def __init__(self, arrivals: Sequence[tuple[float, str]]) -> None:
        self.now = 0.0
        self.arrivals = sorted(arrivals)
        self.blocks: list[int | None] = []

    def clock(self) -> float:
        return self.now

    async def read(self, count: int, block_ms: int | None) -> list[str]:
        self.blocks.append(block_ms)
        ready = [a for a in self.arrivals if a[0] <= self.now]
        if not ready and block_ms is not None and self.arrivals:
            deadline = self.now + block_ms / 1000.0
            self.now = min(deadline, self.arrivals[0][0])
            ready = [a for a in self.arrivals if a[0] <= self.now]
        elif not ready and block_ms is not None:
            self.now += block_ms / 1000.0
        elif not ready:
            self.now += 0.0001  # a non-blocking round trip still takes a little time
        taken = ready[:count]
        for a in taken:
            self.arrivals.remove(a)
        return [item for _, item in taken]


async def _fill(
    stream: FakeStream, batcher: MicroBatcher[str], *, window: int = 10_000, stop: bool = False
) -> Batch[str]:
    # The caller's window counts the items it holds, the open batch's included.
    return await fill(
        batcher,
        stream.read,
        capacity=lambda: window - len(batcher),
        idle_block_ms=500,
        stopping=lambda: stop,
        clock=stream.clock,
    )


async def test_batch_closes_on_size_before_the_wait_is_up() -> None:
    # 10 events arrive 1 ms apart; max 4 per batch, 50 ms wait.
    stream = FakeStream([(i * 0.001, f"e{i}") for i in range(10)])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=4, max_wait_s=0.050)
    batch = await _fill(stream, batcher)
    assert batch.items == ["e0", "e1", "e2", "e3"]
    assert batch.reason == "size"
    assert batch.wait_s == pytest.approx(0.003)
    second = await _fill(stream, batcher)
    assert second.items == ["e4", "e5", "e6", "e7"]
    assert second.reason == "size"


async def test_batch_closes_on_time_when_events_trickle_in() -> None:
    # Events 4 ms apart, 10 ms wait, batches of up to 100: the time threshold wins.
    stream = FakeStream([(i * 0.004, f"e{i}") for i in range(10)])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=100, max_wait_s=0.010)
    batch = await _fill(stream, batcher)
    assert batch.reason == "time"
    assert batch.items == ["e0", "e1", "e2"]  # arrived at 0, 4, 8 ms
    assert batch.wait_s == pytest.approx(0.010)
    # While a batch is open a read blocks no longer than the batch's remaining time.
    assert stream.blocks[0] == 500  # idle: nothing open yet
    assert all(b is None or b <= 10 for b in stream.blocks[1:])


async def test_a_lone_event_waits_at_most_the_max_wait() -> None:
    stream = FakeStream([(0.1, "only")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=64, max_wait_s=0.005)
    batch = await _fill(stream, batcher)
    assert batch.items == ["only"]
    assert batch.reason == "time"
    assert stream.now == pytest.approx(0.105)


async def test_zero_wait_takes_what_one_read_returns() -> None:
    stream = FakeStream([(0.0, "a"), (0.0, "b"), (0.002, "c")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=64, max_wait_s=0.0)
    batch = await _fill(stream, batcher)
    assert batch.items == ["a", "b"]


async def test_remaining_time_under_a_millisecond_reads_without_blocking() -> None:
    stream = FakeStream([(0.0, "a"), (0.0095, "b"), (0.0200, "c")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=64, max_wait_s=0.010)
    batch = await _fill(stream, batcher)
    assert batch.items == ["a", "b"]
    assert None in stream.blocks  # the last 0.5 ms was a non-blocking read
    assert 0 not in stream.blocks  # BLOCK 0 would mean "forever" to Redis


async def test_full_window_closes_the_open_batch() -> None:
    stream = FakeStream([(0.0, f"e{i}") for i in range(10)])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=8, max_wait_s=1.0)
    batch = await _fill(stream, batcher, window=3)
    assert batch.items == ["e0", "e1", "e2"]


async def test_no_capacity_and_nothing_open_returns_an_empty_batch() -> None:
    stream = FakeStream([(0.0, "a")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=8, max_wait_s=1.0)
    batch = await _fill(stream, batcher, window=0)
    assert batch.items == []
    assert batch.reason == "window"
    assert stream.blocks == []  # nothing was read: the window is full


async def test_idle_read_returns_an_empty_batch_after_the_idle_block() -> None:
    stream = FakeStream([])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=8, max_wait_s=0.01)
    batch = await _fill(stream, batcher)
    assert batch.items == []
    assert batch.reason == "idle"
    assert stream.now == pytest.approx(0.5)


async def test_stopping_flushes_the_open_batch() -> None:
    stream = FakeStream([(0.0, "a")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=8, max_wait_s=10.0)
    batcher.add(["x"], now=0.0)
    batch = await _fill(stream, batcher, stop=True)
    assert batch.items == ["x"]
    assert batch.reason == "stop"


def test_batcher_rejects_more_than_fits() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_size=2, max_wait_s=0.0)
    with pytest.raises(ValueError, match="do not fit"):
        batcher.add([1, 2, 3], now=0.0)


def test_due_reports_size_then_time() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_size=2, max_wait_s=0.5)
    assert batcher.due(0.0) is None
    batcher.add([1], now=1.0)
    assert batcher.due(1.2) is None
    assert batcher.remaining_s(1.2) == pytest.approx(0.3)
    assert batcher.due(1.5) == "time"
    batcher.add([2], now=1.1)
    assert batcher.due(1.1) == "size"
    batch = batcher.take(1.1, "size")
    assert batch.wait_s == pytest.approx(0.1)
    assert len(batcher) == 0
    assert batcher.remaining_s(2.0) is None


async def test_an_open_batch_never_blocks_longer_than_the_idle_block() -> None:
    """A long max wait must not delay noticing a stop request (SIGTERM) by that long."""
    stream = FakeStream([(0.0, "a")])
    batcher: MicroBatcher[str] = MicroBatcher(max_size=8, max_wait_s=30.0)
    batch = await _fill(stream, batcher)
    assert batch.reason == "time"
    assert max(b for b in stream.blocks if b is not None) == 500
