"""The gateway's Prometheus metrics: every name and label in one place, plus record helpers.

Names follow Prometheus conventions (``gateway_`` prefix, base units, ``_seconds``,
``_total``). Every label has a small, closed set of values; none ever carries an entity id,
a request id or any other client-chosen string:

=============  =====================================================================
``transport``  ``http`` | ``grpc``
``route``      the route template (``POST /v1/models/{model}/predict``), the gRPC method
               (``/gateway.v1.Gateway/Predict``) or ``unmatched``
``model``      a model from the spec; ``unknown`` for any other name; empty when the route
               names no model
``outcome``    :data:`OUTCOMES`
``source``     :data:`SOURCES`
``error_type`` a ``GatewayError`` class name, ``HTTPError`` (routing 404/405) or ``Unhandled``
``operation``  ``lookup`` | ``write_predictions``
=============  =====================================================================

The objects are module-level: prometheus_client's registry is process-wide by design, and in
multiprocess mode (several uvicorn workers, see ``multiproc``) the values live in files
anyway. Label children are cached in plain dicts, so recording costs a dict lookup and the
metric's own update, not ``labels()``'s validation on every request.

The per-request API metrics (request duration, errors, shed, in-flight, predictions, feature
and prediction ages) are buffered: a request adds to plain counters in this process, and
:func:`flush` moves them into prometheus_client every second (``telemetry_running``), before
this process answers a scrape, and at exit. prometheus_client's own update of a histogram
scans its buckets in Python and, in multiprocess mode, writes memory-mapped files under a
lock, once per value: in multiprocess mode, buffering took 17% off a cache hit's CPU
(docs/measurements.md; with one in-memory registry the gain was within the noise). The price:
a scrape that reaches another worker sees this one's last second late, and the in-flight
gauge is sampled at each flush. Redis and Triton call
durations (one per shared call, also recorded by the stream worker) are not buffered.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from gateway.errors import ClientDisconnected, GatewayError, Overloaded, RateLimited
from gateway.telemetry import multiproc

if TYPE_CHECKING:
    from gateway.service import Prediction
    from gateway.validation import PredictRequest

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
TRANSPORTS = ("http", "grpc")
OUTCOMES = (
    "ok",
    "client_error",
    "rate_limited",
    "shed",
    "cancelled",
    "unavailable",
    "timeout",
    "error",
)
"""Request outcomes. ``shed``: refused by the in-flight bound (``Overloaded``);
``unavailable``: 503 from a dependency; ``timeout``: 504; ``error``: any other 5xx."""
SOURCES = ("hit", "stale_hit", "stale_fallback", "miss", "bypass", "default", "none", "other")
"""Where a prediction came from: ``hit`` fresh cache; ``stale_hit`` stale-while-revalidate;
``stale_fallback`` stale cache because real time failed; ``miss`` computed after a cache miss;
``bypass`` computed without reading the cache (``cache: bypass`` or feature overrides);
``default`` the model's default scores; ``none`` no answer (``cache: only``); ``other`` a
source this version does not know yet."""
SERVER_FAILURES = frozenset({"unavailable", "timeout", "error"})
UNMATCHED = "unmatched"
UNKNOWN_MODEL = "unknown"

# A few-ms service: 0.5 ms … 2.5 s (the Triton deadline is 1 s).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Feature and prediction ages: seconds to a week.
AGE_BUCKETS = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    604800.0,
)  # fmt: skip

REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "API requests from arrival to the last byte of the answer, by transport, route, model and "
    "outcome (health and /metrics excluded). The _count is the request counter.",
    ["transport", "route", "model", "outcome"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "gateway_requests_in_flight",
    "API requests being processed (each worker's count sampled every second, summed over the "
    "pod's worker processes).",
    ["transport"],
    multiprocess_mode="livesum",
)
SHED = Counter(
    "gateway_shed_requests",
    "API requests refused at once because the process was at its in-flight bound (or, for "
    "gRPC, at grpc_max_concurrent_rpcs).",
    ["transport"],
)
ERRORS = Counter(
    "gateway_errors",
    "API requests answered with an error, by error type (the problem type / gRPC error-type).",
    ["transport", "error_type"],
)
PREDICTIONS = Counter(
    "gateway_predictions",
    "Predictions served (one per entity, batch items counted one by one), by source.",
    ["model", "source"],
)
FEATURE_AGE = Histogram(
    "gateway_feature_age_seconds",
    "Age (by event time) of the stored features behind each served prediction.",
    ["model"],
    buckets=AGE_BUCKETS,
)
PREDICTION_AGE = Histogram(
    "gateway_prediction_age_seconds",
    "Age of each prediction served from the cache (fresh or stale).",
    ["model", "source"],
    buckets=AGE_BUCKETS,
)
TRITON_DURATION = Histogram(
    "gateway_triton_request_duration_seconds",
    "Triton inference calls as the gateway sees them (gRPC round trip, queue and compute).",
    ["model", "outcome"],
    buckets=LATENCY_BUCKETS,
)
REDIS_DURATION = Histogram(
    "gateway_redis_request_duration_seconds",
    "Redis round trips: lookup (features + cached predictions) and write_predictions.",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)

_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


class _BufferedHistogram:
    """Observations of one histogram child, held until :func:`flush`."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        # prometheus_client's own bounds, +Inf last: an observation goes to the first bucket
        # whose bound is >= it, which is what bisect_left finds.
        self._bounds: list[float] = child._upper_bounds
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        buckets = self._child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
                counts[i] = 0
        self._child._sum.inc(self._sum)
        self._sum = 0.0


class _BufferedCounter:
    __slots__ = ("_child", "_n")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._n = 0

    def inc(self) -> None:
        self._n += 1

    def flush(self) -> None:
        if self._n:
            self._child.inc(self._n)
            self._n = 0


class InFlight:
    """Requests being processed in this process; the gauge is set to it at each flush."""

    __slots__ = ("_child", "value")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def flush(self) -> None:
        self._child.set(self.value)


_Buffer = _BufferedHistogram | _BufferedCounter | InFlight
_buffers: dict[tuple[Any, ...], Any] = {}
_flush_order: list[_Buffer] = []


def _buffered(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    buffer = _buffers.get(key)
    if buffer is None:
        child = _child(metric, *labels)
        kind = _BufferedHistogram if isinstance(metric, Histogram) else _BufferedCounter
        buffer = _buffers[key] = kind(child)
        _flush_order.append(buffer)
    return buffer


def flush() -> None:
    """Move the buffered API metrics into prometheus_client. Call it on the event loop's
    thread (the buffers are not locked)."""
    for buffer in _flush_order:
        buffer.flush()


# Series that must exist before anything happens (a shed counter that appears only with the
# first shed request breaks rate() and "absent" alerts).
IN_FLIGHT_BY_TRANSPORT = {t: InFlight(_child(IN_FLIGHT, t)) for t in TRANSPORTS}
_flush_order.extend(IN_FLIGHT_BY_TRANSPORT.values())
for _transport in TRANSPORTS:
    _buffered(SHED, _transport)


_request_series: dict[tuple[str, str, str, str], _BufferedHistogram] = {}
"""Every request's duration buffer by its labels: one lookup per request (the general
``_buffered`` costs a call and a key built around the metric, ~0.4 µs more)."""


def observe_request(
    transport: str, route: str, model: str, outcome: str, seconds: float, error_type: str | None
) -> None:
    labels = (transport, route, model, outcome)
    duration = _request_series.get(labels)
    if duration is None:
        duration = _request_series[labels] = _buffered(REQUEST_DURATION, *labels)
    duration.observe(seconds)
    if error_type is not None:
        _buffered(ERRORS, transport, error_type).inc()
    if outcome == "shed":
        _buffered(SHED, transport).inc()


def observe_triton(model: str, outcome: str, seconds: float) -> None:
    _child(TRITON_DURATION, model, outcome).observe(seconds)


def observe_redis(operation: str, outcome: str, seconds: float) -> None:
    _child(REDIS_DURATION, operation, outcome).observe(seconds)


def observe_predictions(
    model: str, request: PredictRequest, predictions: Sequence[Prediction | None]
) -> None:
    """Source, feature age and (for cached answers) prediction age of each prediction."""
    items = request.items
    bypass_all = request.cache_mode == "bypass"
    for i, prediction in enumerate(predictions):
        if prediction is not None:
            observe_prediction(model, prediction, bypass=bypass_all or bool(items[i].overrides))


class _PredictionSeries:
    """The buffers one (model, source) pair of predictions feeds, found with one lookup per
    prediction instead of one per series. The prediction-age series appears with its first
    observation, as before."""

    __slots__ = ("count", "feature_age", "model", "prediction_age", "source")

    def __init__(self, model: str, source: str) -> None:
        self.model = model
        self.source = source
        self.count: _BufferedCounter = _buffered(PREDICTIONS, model, source)
        self.feature_age: _BufferedHistogram = _buffered(FEATURE_AGE, model)
        self.prediction_age: _BufferedHistogram | None = None

    def observe_prediction_age(self, seconds: float) -> None:
        histogram = self.prediction_age
        if histogram is None:
            histogram = self.prediction_age = _buffered(PREDICTION_AGE, self.model, self.source)
        histogram.observe(seconds)


_prediction_series: dict[tuple[str, str], _PredictionSeries] = {}
_AGED_SOURCES = frozenset({"hit", "stale_hit", "stale_fallback"})


def observe_prediction(model: str, prediction: Prediction, *, bypass: bool) -> None:
    """``bypass``: the cache was not to answer it (cache mode ``bypass``, or overrides)."""
    source = source_label(prediction.source, prediction.flags, bypass)
    series = _prediction_series.get((model, source))
    if series is None:
        series = _prediction_series[(model, source)] = _PredictionSeries(model, source)
    series.count.inc()
    if prediction.feature_age_s is not None:
        series.feature_age.observe(prediction.feature_age_s)
    if prediction.prediction_age_s and source in _AGED_SOURCES:
        series.observe_prediction_age(prediction.prediction_age_s)


def source_label(source: str, flags: Sequence[str], bypass: bool) -> str:
    """``Prediction.source`` (+ flags, cache mode) → a value of :data:`SOURCES`."""
    if source == "cache":
        return "hit"
    if source == "model":
        return "bypass" if bypass else "miss"
    if source == "stale":
        return "stale_fallback" if "fallback" in flags else "stale_hit"
    if source in ("default", "none"):
        return source
    return "other"


def outcome(status: int, error: type[BaseException] | None = None) -> str:
    """The outcome label of an answer: by error class where known, else by HTTP status."""
    if error is not None:
        if issubclass(error, Overloaded):
            return "shed"
        if issubclass(error, RateLimited):
            return "rate_limited"
        if issubclass(error, ClientDisconnected | asyncio.CancelledError):
            return "cancelled"
        status = error.http_status if issubclass(error, GatewayError) else 500
    if status < 400:
        return "ok"
    if status == 499:
        return "cancelled"
    if status < 500:
        return "client_error"
    if status == 503:
        return "unavailable"
    if status == 504:
        return "timeout"
    return "error"


def error_type_label(error: type[BaseException]) -> str:
    if issubclass(error, GatewayError):
        return error.__name__  # the error tree: a closed set of class names
    if issubclass(error, asyncio.CancelledError):
        return "Cancelled"
    return "Unhandled"


def error_class(name: str) -> type[GatewayError] | None:
    """The ``GatewayError`` subclass called ``name`` (from a problem type URN), if any."""
    if not _ERROR_CLASSES:
        pending: list[type[GatewayError]] = [GatewayError]
        while pending:
            cls = pending.pop()
            _ERROR_CLASSES[cls.__name__] = cls
            pending.extend(cls.__subclasses__())
    return _ERROR_CLASSES.get(name)


_ERROR_CLASSES: dict[str, type[GatewayError]] = {}


def exposition() -> bytes:
    """The text exposition: this process's registry, or all workers' files in multiprocess mode."""
    path = multiproc.directory()
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def mark_process_dead() -> None:
    """At worker exit: drop this process's live gauges (in-flight) from the shared files."""
    path = multiproc.directory()
    if path is not None:
        prometheus_multiprocess.mark_process_dead(os.getpid(), str(path))  # type: ignore[no-untyped-call]
