"""Log lines carry the request id and trace id of the request that logged them."""

from __future__ import annotations

import contextvars
import logging

import orjson
from opentelemetry.sdk.trace import TracerProvider

from gateway.logs import JsonFormatter
from gateway.telemetry.context import RequestContext, bind_request_id, current, log_fields

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _format(message: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    line: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return line


def _in_request(context: RequestContext, fn: object) -> dict[str, object]:
    def run() -> dict[str, object]:
        current.set(context)
        return fn()  # type: ignore[operator,no-any-return]

    return contextvars.copy_context().run(run)


def test_no_request_no_ids() -> None:
    line = contextvars.copy_context().run(lambda: _format("idle"))
    assert "request_id" not in line
    assert "trace_id" not in line


def test_the_bound_request_id_and_the_callers_trace_id_without_tracing() -> None:
    headers = [(b"traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode())]

    def log() -> dict[str, object]:
        bind_request_id("req-42")
        return _format("slow request", route="POST /x")

    line = _in_request(RequestContext("http", headers), log)
    assert line["request_id"] == "req-42"
    assert line["trace_id"] == TRACE_ID
    assert line["route"] == "POST /x"


def test_a_sane_x_request_id_is_used_before_one_is_bound() -> None:
    sane = [(b"x-request-id", b"client-abc.1")]
    insane = [(b"x-request-id", b"<script>"), (b"traceparent", b"garbage")]
    assert _in_request(RequestContext("http", sane), log_fields) == {"request_id": "client-abc.1"}
    assert _in_request(RequestContext("http", insane), log_fields) == {}


def test_grpc_metadata_works_the_same() -> None:
    metadata = (("x-request-id", "grpc-1"), ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"))
    fields = _in_request(RequestContext("grpc", metadata), log_fields)
    assert fields == {"request_id": "grpc-1", "trace_id": TRACE_ID}


def test_with_tracing_the_span_gives_the_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("request") as span:
        fields = log_fields()
        context = span.get_span_context()
    assert fields == {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
