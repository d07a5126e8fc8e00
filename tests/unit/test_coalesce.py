"""SingleFlight: followers of a computation in flight get the leader's outcome."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gateway.coalesce import SingleFlight


async def test_nothing_is_in_flight_until_a_leader_registers() -> None:
    flight: SingleFlight[int] = SingleFlight()
    assert flight.join("k") is None
    flight.lead("k")
    assert len(flight) == 1
    flight.resolve("k", 1)  # no follower: nothing to hand it to
    assert len(flight) == 0
    assert flight.join("k") is None


async def test_every_follower_gets_the_leaders_result() -> None:
    flight: SingleFlight[int] = SingleFlight()
    flight.lead("k")
    first, second = flight.join("k"), flight.join("k")
    assert first is not None
    assert first is second  # one future, however many follow
    assert flight.join("other") is None
    flight.resolve("k", 42)
    assert await first == 42
    assert flight.join("k") is None  # done: the next miss leads a new computation


async def test_every_follower_gets_the_leaders_error() -> None:
    flight: SingleFlight[int] = SingleFlight()
    flight.lead("k")
    follower = flight.join("k")
    assert follower is not None
    flight.fail("k", LookupError("triton down"))
    with pytest.raises(LookupError, match="triton down"):
        await follower
    assert len(flight) == 0


async def test_an_error_nobody_waits_for_any_more_is_not_reported_as_unretrieved() -> None:
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        flight: SingleFlight[int] = SingleFlight()
        flight.lead("k")
        assert flight.join("k") is not None  # a follower that then gave up
        flight.fail("k", LookupError("triton down"))
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
