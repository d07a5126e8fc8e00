"""The request context every log line of a request carries: request id and trace id.

The transport layer (``telemetry.http`` / ``telemetry.grpc``) sets a fresh
:class:`RequestContext` per request; the handlers bind the request id once they have it.
Nothing is computed on the hot path: the trace id is read from the span (or, with tracing
off, parsed from the caller's ``traceparent``) only when a line is actually logged.
Background work started by a request (write-backs) inherits the context, so its lines carry
the ids of the request that caused them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(slots=True)
class RequestContext:
    transport: str
    headers: Iterable[tuple[Any, Any]] = ()
    """The caller's headers (ASGI byte pairs) or gRPC metadata, read only when logging."""
    request_id: str | None = None
    span: trace.Span | None = None
    """The request's server span while tracing is on."""

    def trace_id(self) -> str | None:
        span = self.span
        if span is not None:
            context = span.get_span_context()
            if context.is_valid:
                return format(context.trace_id, "032x")
        raw = _header(self.headers, "traceparent")
        match = _TRACEPARENT.match(raw) if raw else None
        if match is None or match[1] == "0" * 32:
            return None
        return match[1]

    def effective_request_id(self) -> str | None:
        """The bound request id, else a sane ``X-Request-ID`` the caller sent."""
        if self.request_id is not None:
            return self.request_id
        raw = _header(self.headers, "x-request-id")
        return raw if raw and _REQUEST_ID.match(raw) else None


current: ContextVar[RequestContext | None] = ContextVar("gateway_request", default=None)


def bind_request_id(request_id: str) -> None:
    """Called by the handlers once the request id is known (given or generated)."""
    context = current.get()
    if context is not None:
        context.request_id = request_id


def log_fields() -> dict[str, str]:
    """``request_id`` and ``trace_id`` (and ``span_id``) for the current log line."""
    fields: dict[str, str] = {}
    context = current.get()
    if context is not None:
        request_id = context.effective_request_id()
        if request_id is not None:
            fields["request_id"] = request_id
        trace_id = context.trace_id()
        if trace_id is not None:
            fields["trace_id"] = trace_id
    # A span current right now (e.g. in a write-back) is more precise than the request's.
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = format(span_context.trace_id, "032x")
        fields["span_id"] = format(span_context.span_id, "016x")
    return fields


def _header(headers: Iterable[tuple[Any, Any]], name: str) -> str | None:
    encoded = name.encode()
    for key, value in headers:
        if key in (encoded, name):
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None
