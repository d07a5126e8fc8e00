"""gateway.breaker: the state machine, driven by a fake clock."""

from __future__ import annotations

from gateway.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("triton", failure_threshold=3, open_s=1.0, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    b = breaker(Clock())
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.state is State.CLOSED
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    assert not b.allow()


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 0.5
    assert not b.allow()
    assert b.retry_after_s == 0.5
    clock.now += 0.6
    assert b.allow()  # the probe
    assert b.state is State.HALF_OPEN
    assert not b.allow()  # everyone else still fails fast


def test_probe_success_closes_and_failure_reopens() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 1.1
    assert b.allow()
    b.record_failure()
    assert b.state is State.OPEN
    assert not b.allow()
    clock.now += 1.1
    assert b.allow()
    b.record_success()
    assert b.state is State.CLOSED
    assert all(b.allow() for _ in range(10))
