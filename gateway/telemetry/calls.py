"""One timer (and, with tracing on, one CLIENT span) around each Redis and Triton round trip.

Used where the libraries are called (``store.py``, ``triton.py``) as a ``with`` block around
the call and its error translation, so the outcome label is the translated ``GatewayError``::

    with triton_call(spec.name, spec.triton_name, version, len(rows)) as call:
        response = await client.infer(..., headers=call.headers)

While tracing is off a call costs two ``perf_counter()`` reads and one histogram update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry.trace import SpanKind

from gateway.telemetry import metrics, tracing

TRITON_RPC_SERVICE = "inference.GRPCInferenceService"


class DependencyCall:
    __slots__ = ("_label", "_observe", "_span_cm", "_start", "_wants_headers", "headers")

    def __init__(
        self,
        observe: Callable[[str, str, float], None],
        label: str,
        span_cm: AbstractContextManager[Any] | None,
        *,
        wants_headers: bool = False,
    ) -> None:
        self._observe = observe
        self._label = label
        self._span_cm = span_cm
        self._wants_headers = wants_headers
        self._start = 0.0
        self.headers: dict[str, str] | None = None
        """Trace context to send along (Triton): set only when the span is sampled."""

    def __enter__(self) -> DependencyCall:
        if self._span_cm is not None:
            self._span_cm.__enter__()
            if self._wants_headers:
                self.headers = tracing.triton_headers()
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._start
        outcome = "ok" if exc_type is None else metrics.outcome(500, exc_type)
        self._observe(self._label, outcome, seconds)
        if self._span_cm is not None:
            # Records the exception and sets the ERROR status on the span.
            self._span_cm.__exit__(exc_type, exc, tb)


def triton_call(model: str, triton_model: str, version: str, batch_size: int) -> DependencyCall:
    span_cm = None
    if tracing.enabled and tracing.in_sampled_trace():
        span_cm = tracing.tracer().start_as_current_span(
            "triton.infer",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": TRITON_RPC_SERVICE,
                "rpc.method": "ModelInfer",
                "gateway.model": model,
                "triton.model.name": triton_model,
                "triton.model.version": version,
                "triton.batch_size": batch_size,
            },
        )
    return DependencyCall(metrics.observe_triton, model, span_cm, wants_headers=True)


def redis_call(operation: str, model: str, entities: int) -> DependencyCall:
    """``operation``: ``lookup`` (span ``redis.lookup``) or ``write_predictions``
    (span ``cache.write_back``)."""
    span_cm = None
    if tracing.enabled and tracing.in_sampled_trace():
        span_cm = tracing.tracer().start_as_current_span(
            _SPAN_NAMES.get(operation, f"redis.{operation}"),
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "redis",
                "db.operation.name": "PIPELINE",
                "gateway.operation": operation,
                "gateway.model": model,
                "gateway.entities": entities,
            },
        )
    return DependencyCall(metrics.observe_redis, operation, span_cm)


_SPAN_NAMES = {"lookup": "redis.lookup", "write_predictions": "cache.write_back"}
