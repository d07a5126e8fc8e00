"""Prometheus metrics of a stream worker, on a registry of its own.

Names follow the gateway's conventions (``gateway_`` prefix, ``_seconds``, ``_total``). The
worker serves them with ``prometheus_client.start_http_server`` on ``metrics_port``, together
with the Triton and Redis call histograms that ``gateway.telemetry`` records in the
process-wide registry (``gateway_triton_request_duration_seconds``,
``gateway_redis_request_duration_seconds``) and the process collectors. The gateway's API
metrics live in that registry too but are left out: a worker serves no API, and its zero
in-flight and shed series would pass it off as a gateway to dashboards and alerts.
Events/s is ``rate(gateway_stream_events_total[1m])``.

Every labelled series an alert or panel reads exists at 0 from the start: a counter that
appears only with its first increment is invisible to ``increase()``, so the first dead letter
would not alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.stream.events import PoisonKind

EVENT_OUTCOMES = ("scored", "duplicate", "dead_lettered")
DEAD_LETTER_KINDS = get_args(PoisonKind)
BATCH_REASONS = ("size", "time", "window", "stop", "recover", "reclaim")
"""Why a batch closed: ``size`` / ``time`` thresholds, ``window`` (in-flight window full),
``stop`` (shutting down), ``recover`` (own pending entries after a restart), ``reclaim``
(entries of a worker presumed dead)."""
SHARED_FAMILIES = frozenset(
    {"gateway_triton_request_duration_seconds", "gateway_redis_request_duration_seconds"}
)
"""Families of the process-wide registry a worker exposes; any other ``gateway_*`` is the API's."""

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "gateway_stream_events_total",
            "Input events finished, by outcome: scored (published), duplicate (already "
            "published: redelivery or a producer retry), dead_lettered.",
            ["outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "gateway_stream_dead_letters_total",
            "Events moved to the dead-letter stream, by kind: invalid (cannot be parsed or "
            "validated), attempts (kept failing for max_attempts deliveries), failed (scoring "
            "rejected it).",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "gateway_stream_batch_size",
            "Entries per micro-batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_wait = Histogram(
            "gateway_stream_batch_wait_seconds",
            "Time a micro-batch stayed open: from its first entry's read to its close.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.batch_close = Counter(
            "gateway_stream_batches_total",
            "Micro-batches closed, by reason: size, time, window (in-flight window full), "
            "stop, recover (own pending entries after a restart), reclaim.",
            ["reason"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "gateway_stream_batch_processing_seconds",
            "From a batch's close to its acknowledgement (features, Triton, cache, publish).",
            buckets=(*WAIT_BUCKETS, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.latency = Histogram(
            "gateway_stream_event_to_prediction_seconds",
            "End to end: from the event's append to the input stream to its prediction's "
            "publication (both on the Redis clock).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "gateway_stream_consumer_lag",
            "Entries of the input stream not yet delivered to the consumer group (XINFO GROUPS "
            "lag); what KEDA scales on.",
            registry=r,
        )
        self.pending = Gauge(
            "gateway_stream_pending_entries",
            "Entries delivered to the group but not yet acknowledged (all workers).",
            registry=r,
        )
        self.stream_length = Gauge(
            "gateway_stream_length", "Entries in the input stream (XLEN).", registry=r
        )
        self.in_flight = Gauge(
            "gateway_stream_in_flight_events",
            "Entries this worker holds (read or reclaimed, not yet acknowledged).",
            registry=r,
        )
        self.reclaimed = Counter(
            "gateway_stream_reclaimed_total",
            "Entries taken over from a worker presumed dead (XAUTOCLAIM).",
            registry=r,
        )
        self.trimmed = Counter(
            "gateway_stream_trimmed_unprocessed_total",
            "Pending entries trimmed from the input stream before anyone acknowledged them "
            "(lost: raise the producers' MAXLEN).",
            registry=r,
        )
        self.retries = Counter(
            "gateway_stream_retries_total",
            "Batch attempts that failed on an unavailable dependency and were retried.",
            ["dependency"],
            registry=r,
        )
        self.failures = Counter(
            "gateway_stream_failed_attempts_total",
            "Entries whose processing failed for another reason; left pending for redelivery.",
            registry=r,
        )
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for kind in DEAD_LETTER_KINDS:
            self.dead_letters.labels(kind)
        for reason in BATCH_REASONS:
            self.batch_close.labels(reason)


class Exposition(Collector):
    """The worker's registry and, of the process-wide one, all but the gateway's API metrics."""

    def __init__(self, own: CollectorRegistry, shared: CollectorRegistry) -> None:
        self._own = own
        self._shared = shared

    def collect(self) -> Iterable[Metric]:
        yield from self._own.collect()
        for metric in self._shared.collect():
            if not metric.name.startswith("gateway_") or metric.name in SHARED_FAMILIES:
                yield metric


def exposition(metrics: StreamMetrics) -> Exposition:
    """The worker's own metrics plus Triton and Redis calls and the process collectors."""
    return Exposition(metrics.registry, REGISTRY)
