"""What the app lifespan runs for telemetry: tracing for the app's lifetime, the buffered API
metrics flushed every second, metrics cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry import metrics, tracing


@asynccontextmanager
async def telemetry_running(tracer_provider: TracerProvider | None = None) -> AsyncIterator[None]:
    """Tracing on ``tracer_provider`` (tests) or as ``OTEL_*`` say; at exit, spans flushed, the
    last buffered metrics written and this worker's live gauges dropped from the multiprocess
    files."""
    with tracing.session(tracer_provider):
        flusher = asyncio.create_task(_flush_metrics_every(FLUSH_INTERVAL_S))
        try:
            yield
        finally:
            flusher.cancel()
            try:
                # wait(), not `await flusher`: the flusher's own cancellation is expected, but
                # a cancellation of this task while it waits must still propagate.
                await asyncio.wait([flusher])
            finally:
                metrics.flush()
                metrics.mark_process_dead()


FLUSH_INTERVAL_S = 1.0
"""How far behind the buffered API metrics of a worker may be in another worker's scrape."""


async def _flush_metrics_every(interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        metrics.flush()
