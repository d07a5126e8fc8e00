"""Tracing: configuration from OTEL_* variables, no-op when off, sampled-only propagation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from prometheus_client import REGISTRY

from devstack.otlp_sink import OtlpSink
from gateway.errors import InferenceTimeout
from gateway.telemetry import tracing
from gateway.telemetry.calls import redis_call, triton_call

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.session(provider):
        yield exporter
    provider.shutdown()


def _remote_parent(sampled: bool) -> object:
    parent = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))


def test_tracing_is_off_without_an_endpoint() -> None:
    assert tracing.provider_from_env() is None
    assert not tracing.enabled


@pytest.mark.parametrize("extra", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_tracing_stays_off_when_disabled_the_standard_way(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    assert tracing.provider_from_env() is None


def test_an_endpoint_turns_on_otlp_http_export_with_the_standard_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with OtlpSink() as sink:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1.0")
        provider = tracing.provider_from_env()
        assert provider is not None
        assert "TraceIdRatioBased{1.0}" in provider.sampler.get_description()
        with tracing.session(provider):
            assert tracing.enabled
            with tracing.tracer().start_as_current_span("unit.exported"):
                pass
        assert not tracing.enabled
        provider.shutdown()  # flushes the batch processor
        (span,) = sink.wait_for(lambda spans: len(spans) == 1)
    assert span.name == "unit.exported"
    assert span.service == "inference-gateway"  # the default service name


def test_the_service_name_comes_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring-gateway")
    provider = tracing.provider_from_env()
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "scoring-gateway"
    provider.shutdown()


def test_session_from_an_empty_environment_changes_nothing() -> None:
    with tracing.session() as provider:
        assert provider is None
        assert not tracing.enabled
        assert tracing.span("anything") is tracing.NO_SPAN
        assert tracing.call("validate", lambda x: x + 1, 41) == 42


def test_helpers_record_nothing_while_off() -> None:
    assert tracing.triton_headers() is None
    with triton_call("fraud_scorer", "fraud_scorer", "1", 4) as call:
        assert call.headers is None


def test_triton_gets_traceparent_only_inside_a_sampled_span(
    exporter: InMemorySpanExporter,
) -> None:
    assert tracing.triton_headers() is None  # no span at all
    assert tracing.span("no request span") is tracing.NO_SPAN  # children only
    with tracing.tracer().start_as_current_span("sampled") as span:
        headers = tracing.triton_headers()
        assert headers is not None
        context = span.get_span_context()
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert version == "00"
        assert (trace_id, span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
        assert int(flags, 16) & 0x01  # sampled (0x02, "random trace id", may be set too)

    token = _remote_parent(sampled=False)
    try:
        with tracing.tracer().start_as_current_span("request of an unsampled caller"):
            assert tracing.triton_headers() is None  # Triton would trace it regardless
            # Nothing below an unsampled request span is even created.
            assert tracing.span("child") is tracing.NO_SPAN
            with triton_call("fraud_scorer", "fraud_scorer", "1", 1) as call:
                assert call.headers is None
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]
    assert [s.name for s in exporter.get_finished_spans()] == ["sampled"]


def test_triton_call_span_carries_model_version_and_batch_size(
    exporter: InMemorySpanExporter,
) -> None:
    token = _remote_parent(sampled=True)
    try:
        with triton_call("fraud", "fraud_onnx", "3", 7) as call:
            assert call.headers is not None
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]
    (span,) = exporter.get_finished_spans()
    assert span.name == "triton.infer"
    assert span.kind is SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["triton.model.name"] == "fraud_onnx"
    assert span.attributes["triton.model.version"] == "3"
    assert span.attributes["triton.batch_size"] == 7
    assert span.attributes["gateway.model"] == "fraud"
    # The traceparent sent is this span's own context.
    assert call.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_a_failed_call_is_an_error_span_and_a_labelled_observation(
    exporter: InMemorySpanExporter,
) -> None:
    labels = {"model": "unit_failing", "outcome": "timeout"}
    before = REGISTRY.get_sample_value("gateway_triton_request_duration_seconds_count", labels)
    with (
        tracing.tracer().start_as_current_span("request"),
        pytest.raises(InferenceTimeout),
        triton_call("unit_failing", "m", "1", 1),
    ):
        raise InferenceTimeout("deadline")
    after = REGISTRY.get_sample_value("gateway_triton_request_duration_seconds_count", labels)
    assert (after or 0) - (before or 0) == 1
    span, _request = exporter.get_finished_spans()
    assert span.name == "triton.infer"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_redis_spans_are_named_by_operation(exporter: InMemorySpanExporter) -> None:
    with (
        tracing.tracer().start_as_current_span("request"),
        redis_call("lookup", "fraud_scorer", 3),
        redis_call("write_predictions", "fraud_scorer", 2),
    ):
        pass
    spans: list[ReadableSpan] = list(exporter.get_finished_spans())
    assert [s.name for s in spans] == ["cache.write_back", "redis.lookup", "request"]
    assert spans[1].attributes is not None
    assert spans[1].attributes["gateway.entities"] == 3
    assert spans[1].attributes["db.system.name"] == "redis"


CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _caller(flags: str) -> list[tuple[bytes, bytes]]:
    traceparent = f"00-{CALLER_TRACE_ID}-00f067aa0ba902b7-{flags}"
    return [(b"host", b"gateway"), (b"traceparent", traceparent.encode())]


def test_an_unsampled_request_span_is_not_made_current_but_keeps_its_trace_id() -> None:
    provider = TracerProvider()  # parentbased_always_on: the caller's flag decides
    with tracing.session(provider):
        span, token = tracing.start_server_span("POST", _caller("00"), tracing.ASGI_GETTER, {})
        try:
            assert token is None  # nothing attached: every span site returns at once
            assert trace.get_current_span() is trace.INVALID_SPAN
            assert not tracing.in_sampled_trace()
            assert tracing.span("child") is tracing.NO_SPAN
            # Log lines still carry the caller's trace id, read from the span.
            assert format(span.get_span_context().trace_id, "032x") == CALLER_TRACE_ID
        finally:
            tracing.end_server_span(span, token)
    provider.shutdown()


def test_a_sampled_request_span_is_current_and_continues_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    span, token = tracing.start_server_span("POST", _caller("01"), tracing.ASGI_GETTER, {})
    try:
        assert token is not None
        assert trace.get_current_span() is span
        assert tracing.in_sampled_trace()
    finally:
        tracing.end_server_span(span, token)
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again
    (finished,) = exporter.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == CALLER_TRACE_ID
    assert finished.parent is not None
    assert finished.parent.span_id == 0x00F067AA0BA902B7


def test_a_request_without_trace_headers_starts_a_new_trace(
    exporter: InMemorySpanExporter,
) -> None:
    headers = [(b"host", b"gateway"), (b"content-type", b"application/json")]
    span, token = tracing.start_server_span("POST", headers, tracing.ASGI_GETTER, {})
    tracing.end_server_span(span, token)
    (finished,) = exporter.get_finished_spans()
    assert finished.parent is None
