"""telemetry_running's exit: the last buffered metrics are written, a cancellation still counts."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from gateway.telemetry import metrics
from gateway.telemetry.lifespan import telemetry_running

ROUTE = "POST /unit-lifespan/{model}"
LABELS = {"transport": "http", "route": ROUTE, "model": "", "outcome": "ok"}


def scraped_count() -> float:
    # Read without flushing: what the exit itself wrote.
    return REGISTRY.get_sample_value("gateway_request_duration_seconds_count", LABELS) or 0.0


async def test_exit_writes_what_is_still_buffered() -> None:
    before = scraped_count()
    async with telemetry_running():
        metrics.observe_request("http", ROUTE, "", "ok", 0.001, None)
    assert scraped_count() == before + 1


async def test_a_cancellation_during_exit_is_not_swallowed() -> None:
    before = scraped_count()

    async def serve() -> None:
        async with telemetry_running():
            metrics.observe_request("http", ROUTE, "", "ok", 0.001, None)
            # Runs once the exit waits for its flusher to stop.
            loop.call_soon(task.cancel)

    loop = asyncio.get_running_loop()
    task = loop.create_task(serve())
    await asyncio.wait([task])
    assert task.cancelled()
    assert scraped_count() == before + 1
