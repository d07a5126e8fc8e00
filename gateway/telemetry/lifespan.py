"""What the app lifespan runs for telemetry: tracing for the app's lifetime, metrics cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry.sdk.trace import TracerProvider

from gateway.telemetry import metrics, tracing


@asynccontextmanager
async def telemetry_running(tracer_provider: TracerProvider | None = None) -> AsyncIterator[None]:
    """Tracing on ``tracer_provider`` (tests) or as ``OTEL_*`` say; at exit, spans flushed and
    this worker's live gauges dropped from the multiprocess files."""
    with tracing.session(tracer_provider):
        try:
            yield
        finally:
            metrics.mark_process_dead()
