"""OpenTelemetry tracing, configured the standard way and free when off.

Configuration is the SDK's own environment variables:

* on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
  (OTLP over HTTP/protobuf, batched), or ``OTEL_TRACES_EXPORTER=console`` (debugging);
  off otherwise, and always with ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``;
* ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (default service name
  ``inference-gateway``), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (default
  ``parentbased_always_on``), ``OTEL_PROPAGATORS`` for incoming context (default W3C
  ``tracecontext,baggage``), ``OTEL_BSP_*`` for the batch processor, ``OTEL_EXPORTER_OTLP_*``
  for the exporter.

When off, :data:`enabled` is False and every helper here returns at its first line: the hot
path pays a module-attribute read per span site and never builds attributes.

When on, a request the sampler drops pays for the SDK's sampling decision (its root span) and
little else: the caller's headers are parsed only when they carry a propagation field, and the
unsampled span is not made current, so every child span site finds no sampled span and
returns at once.

The gateway keeps its provider to itself (it does not set the global one), so tests can
install an SDK provider with an in-memory exporter per app and nothing leaks between them.

Triton traces every request that carries a *valid* W3C context, sampled or not, so
:func:`triton_headers` passes ``traceparent`` on only when the gateway's span is sampled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_SERVICE_NAME = "inference-gateway"
INSTRUMENTATION_NAME = "gateway"

enabled: bool = False
"""True while a tracer provider is installed; read before any tracing work."""
_tracer: trace.Tracer = trace.NoOpTracer()
_w3c = TraceContextTextMapPropagator()
_propagation_keys: frozenset[str | bytes] = frozenset()
"""Header / metadata names the configured propagators read (``traceparent``, ``baggage``…),
as str (gRPC metadata) and bytes (ASGI headers)."""


class _NoSpan:
    """What a span site gets while tracing is off: a context manager doing nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


NO_SPAN = _NoSpan()


def provider_from_env() -> TracerProvider | None:
    """A provider exporting as the ``OTEL_*`` variables say, or None when tracing is off."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp" and endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    else:
        return None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    return provider


def install(provider: trace.TracerProvider) -> None:
    global enabled, _tracer, _propagation_keys
    _tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    fields = propagate.get_global_textmap().fields  # OTEL_PROPAGATORS
    _propagation_keys = frozenset(fields) | frozenset(f.encode("latin-1") for f in fields)
    enabled = True


def uninstall() -> None:
    global enabled, _tracer
    enabled = False
    _tracer = trace.NoOpTracer()


@contextlib.contextmanager
def session(provider: TracerProvider | None = None) -> Iterator[TracerProvider | None]:
    """For the app's lifetime: ``provider`` (tests), else one from the environment, or none.

    A provider built here is shut down at exit, which flushes spans still in the batch.
    """
    own = provider is None
    if provider is None:
        provider = provider_from_env()
    if provider is None:
        yield None
        return
    install(provider)
    try:
        yield provider
    finally:
        uninstall()
        if own:
            provider.shutdown()


def tracer() -> trace.Tracer:
    return _tracer


def in_sampled_trace() -> bool:
    """Tracing is on and the current span is sampled: only then are child spans made.

    A request the sampler dropped (95% of them at 5%) pays for its root span's sampling
    decision and then one check per span site, not for child spans that would be dropped
    anyway. The sampled flag (not ``is_recording``) is checked, so work a sampled request
    started and that outlives its root span (the cache write-back) is still traced.
    """
    if not enabled:
        return False
    current = otel_context.get_current()
    if not current:  # nothing attached, as for every unsampled request: no span to look up
        return False
    return trace.get_current_span(current).get_span_context().trace_flags.sampled


def span(
    name: str, kind: SpanKind = SpanKind.INTERNAL
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A child span of the current (sampled) one; :data:`NO_SPAN` otherwise."""
    if not (enabled and in_sampled_trace()):
        return NO_SPAN
    return _tracer.start_as_current_span(name, kind=kind)


def call(name: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` inside a span called ``name`` (a direct call otherwise)."""
    if not (enabled and in_sampled_trace()):
        return fn(*args, **kwargs)
    with _tracer.start_as_current_span(name):
        return fn(*args, **kwargs)


def start_server_span(
    name: str,
    carrier: Iterable[tuple[Any, Any]],
    getter: Getter[Any],
    attributes: dict[str, Any],
) -> tuple[trace.Span, object | None]:
    """Start a request's SERVER span under the caller's context; returns (span, token).

    Only a sampled span is made current (``token`` is None otherwise): below an unsampled one
    no span is made anyway, and attaching it would only cost the context switch. The span is
    still returned, so log lines carry its trace id.
    """
    parent = None  # nothing from the caller: the request's (empty) context, a new trace
    for key, _ in carrier:
        if key in _propagation_keys:
            parent = propagate.extract(carrier, getter=getter)
            break
    server_span = _tracer.start_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=attributes
    )
    if not server_span.get_span_context().trace_flags.sampled:
        return server_span, None
    return server_span, otel_context.attach(trace.set_span_in_context(server_span, parent))


def end_server_span(server_span: trace.Span, token: object | None) -> None:
    server_span.end()
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


def triton_headers() -> dict[str, str] | None:
    """``{"traceparent": …}`` for the Triton call, only when the current span is sampled.

    Triton traces any request with a valid context, sampled flag or not (it checks validity
    only): passing unsampled contexts on would turn 5% sampling here into 100% there.
    """
    span_context = trace.get_current_span().get_span_context()
    if not (span_context.is_valid and span_context.trace_flags.sampled):
        return None
    headers: dict[str, str] = {}
    _w3c.inject(headers)
    return headers


class AsgiHeadersGetter(Getter[Iterable[tuple[bytes, bytes]]]):
    """Reads propagation headers from an ASGI scope's ``headers`` (lower-case byte pairs)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == wanted]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


class GrpcMetadataGetter(Getter[Iterable[tuple[str, Any]]]):
    """Reads propagation headers from gRPC invocation metadata (lower-case keys)."""

    def get(self, carrier: Iterable[tuple[str, Any]], key: str) -> list[str] | None:
        wanted = key.lower()
        values = [v for k, v in carrier if k == wanted and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, Any]]) -> list[str]:
        return [k for k, _ in carrier]


ASGI_GETTER = AsgiHeadersGetter()
GRPC_GETTER = GrpcMetadataGetter()
