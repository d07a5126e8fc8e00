"""A tiny OTLP/HTTP trace receiver: where local Triton and gateway processes export spans.

Accepts ``POST /v1/traces`` in both OTLP/HTTP encodings (protobuf from the Python SDK, JSON
from Triton's opentelemetry-cpp exporter) and keeps the spans in memory. Tests read them back;
the tracing-overhead benchmark uses it with ``decode=False`` as a cheap sink.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from triton_launcher.ports import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)


class OtlpSink:
    def __init__(self, *, decode: bool = True, host: str = "127.0.0.1") -> None:
        self.port = free_port(host)
        self.host = host
        self.decode = decode
        self.requests = 0
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``: the SDK appends ``/v1/traces``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def traces_url(self) -> str:
        """Full traces URL (Triton's ``--trace-config opentelemetry,url=…``)."""
        return f"{self.endpoint}/v1/traces"

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 5.0
    ) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans not received within {timeout_s}s: {spans}")
            time.sleep(0.02)

    def start(self) -> OtlpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as OTLP exporters expect (HTTP/1.0 would close after every export).
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                content_type = self.headers.get("content-type") or ""
                spans = _decode(body, content_type) if sink.decode else []
                with sink._lock:
                    sink.requests += 1
                    sink._spans.extend(spans)
                self.send_response(200)
                self.send_header("content-type", content_type or "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _decode(body: bytes, content_type: str) -> list[ReceivedSpan]:
    if "json" in content_type:
        return _from_json(json.loads(body))
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    out: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "",
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes={a.key: _proto_value(a.value) for a in span.attributes},
                    )
                )
    return out


def _proto_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _from_json(request: dict[str, Any]) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    for resource_spans in request.get("resourceSpans", []):
        attributes = resource_spans.get("resource", {}).get("attributes", [])
        service = next(
            (a["value"].get("stringValue", "") for a in attributes if a["key"] == "service.name"),
            "",
        )
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                out.append(
                    ReceivedSpan(
                        service=service,
                        name=span.get("name", ""),
                        trace_id=span.get("traceId", "").lower(),
                        span_id=span.get("spanId", "").lower(),
                        parent_span_id=span.get("parentSpanId", "").lower(),
                        attributes={
                            a["key"]: next(iter(a["value"].values()), None)
                            for a in span.get("attributes", [])
                        },
                    )
                )
    return out
