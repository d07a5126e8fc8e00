"""Metric labels: outcomes, sources, error types; prediction accounting; multiprocess setup."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from gateway.errors import (
    ClientDisconnected,
    FeatureStoreUnavailable,
    InferenceFailed,
    InferenceTimeout,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    RateLimited,
    Unauthenticated,
)
from gateway.service import Prediction
from gateway.telemetry import metrics, multiproc
from gateway.telemetry import metrics as telemetry_metrics
from gateway.validation import EntityQuery, PredictRequest


def flushed_sample(name: str, labels: dict[str, str]) -> float | None:
    """A sample as a scrape of this process would see it (the API metrics are buffered)."""
    telemetry_metrics.flush()
    return REGISTRY.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Overloaded, "shed"),
        (RateLimited, "rate_limited"),
        (ClientDisconnected, "cancelled"),
        (asyncio.CancelledError, "cancelled"),
        (InvalidRequest, "client_error"),
        (ModelNotFound, "client_error"),
        (Unauthenticated, "client_error"),
        (FeatureStoreUnavailable, "unavailable"),
        (InferenceTimeout, "timeout"),
        (InferenceFailed, "error"),
        (ValueError, "error"),
    ],
)
def test_outcome_follows_the_error_class(error: type[BaseException], expected: str) -> None:
    assert metrics.outcome(500, error) == expected
    assert expected in metrics.OUTCOMES


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "ok"), (304, "ok"), (404, "client_error"), (405, "client_error"), (429, "client_error"),
     (499, "cancelled"), (500, "error"), (502, "error"), (503, "unavailable"), (504, "timeout")],
)  # fmt: skip
def test_outcome_without_a_known_error_class_follows_the_status(status: int, expected: str) -> None:
    assert metrics.outcome(status) == expected


def test_error_types_are_class_names_of_the_error_tree_only() -> None:
    assert metrics.error_class("ModelNotFound") is ModelNotFound
    assert metrics.error_class("Overloaded") is Overloaded
    assert metrics.error_class("card-000042") is None
    assert metrics.error_type_label(InferenceTimeout) == "InferenceTimeout"
    assert metrics.error_type_label(KeyError) == "Unhandled"
    assert metrics.error_type_label(asyncio.CancelledError) == "Cancelled"


@pytest.mark.parametrize(
    ("source", "flags", "bypass", "label"),
    [
        ("cache", (), False, "hit"),
        ("stale", ("revalidating",), False, "stale_hit"),
        ("stale", ("fallback",), False, "stale_fallback"),
        ("model", (), False, "miss"),
        ("model", (), True, "bypass"),
        ("default", ("fallback",), False, "default"),
        ("none", (), False, "none"),
        ("something_new", (), False, "other"),
    ],
)
def test_source_label_is_a_closed_set(
    source: str, flags: tuple[str, ...], bypass: bool, label: str
) -> None:
    assert metrics.source_label(source, flags, bypass) == label
    assert label in metrics.SOURCES


def _sample(name: str, **labels: str) -> float:
    return flushed_sample(name, labels) or 0.0


def test_observe_predictions_counts_sources_and_ages_per_item() -> None:
    model = "unit_observe_model"
    request = PredictRequest(
        items=[
            EntityQuery("e1", {}),
            EntityQuery("e2", {}),
            EntityQuery("e3", {0: 12.0}),  # overrides: computed without the cache
            EntityQuery("e4", {}),
        ],
        cache_mode="prefer",
        batch=True,
    )
    predictions: list[Prediction | None] = [
        Prediction("e1", (0.1,), "cache", 30.0, 120.0),
        Prediction("e2", (0.2,), "model", 0.0, None),
        Prediction("e3", (0.3,), "model", 0.0, 50.0),
        None,
    ]
    metrics.observe_predictions(model, request, predictions)

    assert _sample("gateway_predictions_total", model=model, source="hit") == 1
    assert _sample("gateway_predictions_total", model=model, source="miss") == 1
    assert _sample("gateway_predictions_total", model=model, source="bypass") == 1
    assert _sample("gateway_feature_age_seconds_count", model=model) == 2
    assert _sample("gateway_feature_age_seconds_sum", model=model) == 170.0
    assert _sample("gateway_prediction_age_seconds_count", model=model, source="hit") == 1
    assert _sample("gateway_prediction_age_seconds_count", model=model, source="miss") == 0


def test_repeated_predictions_add_to_the_same_series() -> None:
    # The series a (model, source) pair feeds are found once and kept: later observations
    # must still land in them, and a prediction-age series appears with its first observation.
    model = "unit_repeat_model"
    fresh = Prediction("e1", (0.1,), "cache", 30.0, 120.0)
    scored = Prediction("e2", (0.2,), "model", 0.0, 10.0)
    for _ in range(3):
        metrics.observe_prediction(model, scored, bypass=False)
    telemetry_metrics.flush()
    assert (
        REGISTRY.get_sample_value(
            "gateway_prediction_age_seconds_count", {"model": model, "source": "miss"}
        )
        is None
    )
    metrics.observe_prediction(model, fresh, bypass=False)
    metrics.observe_prediction(model, fresh, bypass=False)
    metrics.observe_prediction(model, Prediction("e1", (0.1,), "cache", 0.0, None), bypass=False)
    assert _sample("gateway_predictions_total", model=model, source="miss") == 3
    assert _sample("gateway_predictions_total", model=model, source="hit") == 3
    assert _sample("gateway_feature_age_seconds_count", model=model) == 5
    assert _sample("gateway_feature_age_seconds_sum", model=model) == 270.0
    assert _sample("gateway_prediction_age_seconds_count", model=model, source="hit") == 2
    assert _sample("gateway_prediction_age_seconds_sum", model=model, source="hit") == 60.0


def test_cache_bypass_mode_labels_every_computed_prediction_bypass() -> None:
    model = "unit_bypass_model"
    request = PredictRequest([EntityQuery("e1", {})], cache_mode="bypass", batch=False)
    metrics.observe_predictions(model, request, [Prediction("e1", (0.5,), "model", 0.0, 1.0)])
    assert _sample("gateway_predictions_total", model=model, source="bypass") == 1
    assert _sample("gateway_predictions_total", model=model, source="miss") == 0


def test_request_observation_counts_errors_and_shed_requests() -> None:
    route = "POST /unit/{model}"
    shed_before = _sample("gateway_shed_requests_total", transport="grpc")
    metrics.observe_request("grpc", route, "", "shed", 0.0001, "Overloaded")
    metrics.observe_request("grpc", route, "", "ok", 0.002, None)
    labels = {"transport": "grpc", "route": route, "model": ""}
    assert _sample("gateway_request_duration_seconds_count", **labels, outcome="shed") == 1
    assert _sample("gateway_request_duration_seconds_count", **labels, outcome="ok") == 1
    assert _sample("gateway_shed_requests_total", transport="grpc") == shed_before + 1
    assert _sample("gateway_errors_total", transport="grpc", error_type="Overloaded") >= 1


def test_exposition_is_the_prometheus_text_format() -> None:
    text = metrics.exposition().decode()
    assert "# TYPE gateway_request_duration_seconds histogram" in text
    assert 'gateway_requests_in_flight{transport="http"}' in text
    assert 'gateway_shed_requests_total{transport="grpc"}' in text
    assert metrics.CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset PROMETHEUS_MULTIPROC_DIR and restore the original after the test, also when the
    code under test sets it (``delenv`` of an absent variable records nothing to undo)."""
    monkeypatch.setenv(multiproc.ENV, "")
    monkeypatch.delenv(multiproc.ENV)


def test_one_worker_keeps_the_in_memory_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    _unset(monkeypatch)
    assert multiproc.prepare(1) is None
    assert multiproc.ENV not in os.environ


def test_several_workers_get_a_fresh_shared_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    _unset(monkeypatch)
    path = multiproc.prepare(2)
    assert path is not None
    assert os.environ[multiproc.ENV] == str(path)
    assert path.is_dir()
    assert not list(path.iterdir())
    path.rmdir()


def test_these_tests_leave_the_environment_as_they_found_it() -> None:
    # Gateways started later by other tests inherit the environment: a leaked directory would
    # be shared (and emptied at each start) by all of them.
    before = os.environ.get(multiproc.ENV)
    with pytest.MonkeyPatch.context() as patch:
        _unset(patch)
        path = multiproc.prepare(2)
    assert os.environ.get(multiproc.ENV) == before
    assert path is not None
    path.rmdir()


def test_a_given_directory_is_emptied_of_an_earlier_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_4242.db").write_bytes(b"stale")
    (tmp_path / "histogram_4242.db").write_bytes(b"stale")
    (tmp_path / "README").write_text("not ours")
    monkeypatch.setenv(multiproc.ENV, str(tmp_path))
    assert multiproc.prepare(1) == tmp_path  # set explicitly: used even by one worker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.name.removeprefix(name), s.labels.get("le", "")): s.value
        for metric in registry.collect()
        if metric.name == name
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_a_buffered_histogram_flushes_what_prometheus_would_have_recorded() -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=metrics.LATENCY_BUCKETS, registry=registry)
    held = Histogram("held_seconds", "h", buckets=metrics.LATENCY_BUCKETS, registry=registry)
    buffer = metrics._BufferedHistogram(held)
    # Bucket bounds themselves, values just above them, zero, the largest bound and beyond.
    values = [0.0, 0.0005, 0.00051, 0.001, 0.0075, 0.3, 2.5, 2.51, 1e9]
    for value in values:
        direct.observe(value)
        buffer.observe(value)
    assert set(_samples(registry, "held_seconds").values()) == {0.0}, "nothing before a flush"
    buffer.flush()
    buffer.flush()  # a second flush adds nothing
    assert _samples(registry, "held_seconds") == _samples(registry, "direct_seconds")
    assert _samples(registry, "held_seconds")[("_count", "")] == len(values)


def test_buffered_counters_and_the_in_flight_gauge_reach_prometheus_at_flush() -> None:
    registry = CollectorRegistry()
    counter = metrics._BufferedCounter(Counter("held", "c", registry=registry))
    gauge = metrics.InFlight(Gauge("live", "g", registry=registry))
    for _ in range(3):
        counter.inc()
        gauge.inc()
    gauge.dec()
    assert registry.get_sample_value("held_total") == 0
    assert registry.get_sample_value("live") == 0
    counter.flush()
    gauge.flush()
    counter.flush()
    assert registry.get_sample_value("held_total") == 3
    assert registry.get_sample_value("live") == 2
