"""The stream worker's exposition: its own metrics, dependency calls, none of the API's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.stream.metrics import (
    BATCH_REASONS,
    DEAD_LETTER_KINDS,
    EVENT_OUTCOMES,
    StreamMetrics,
    exposition,
)
from gateway.telemetry import metrics as gateway_metrics


def _samples(metrics: StreamMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(exposition(metrics))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_labelled_counters_exist_at_zero_before_anything_happens() -> None:
    samples = _samples(StreamMetrics())
    for outcome in EVENT_OUTCOMES:
        assert samples[("gateway_stream_events_total", (("outcome", outcome),))] == 0
    assert set(DEAD_LETTER_KINDS) == {"invalid", "attempts", "failed"}
    for kind in DEAD_LETTER_KINDS:
        assert samples[("gateway_stream_dead_letters_total", (("kind", kind),))] == 0
    for reason in BATCH_REASONS:
        assert samples[("gateway_stream_batches_total", (("reason", reason),))] == 0
    assert samples[("gateway_stream_consumer_lag", ())] == 0


def test_worker_exposes_dependency_calls_but_not_the_api_metrics() -> None:
    gateway_metrics.observe_triton("unit_stream_model", "ok", 0.004)
    gateway_metrics.observe_redis("lookup", "ok", 0.001)
    names = {name for name, _ in _samples(StreamMetrics())}
    assert "gateway_triton_request_duration_seconds_count" in names
    assert "gateway_redis_request_duration_seconds_count" in names
    # The API's series exist in this process's registry (pre-created), but are not served.
    api = {n for n in names if n.startswith(("gateway_request", "gateway_shed", "gateway_errors"))}
    assert not api, api
    assert "gateway_requests_in_flight" not in names
    assert "gateway_predictions_total" not in names
