"""Observability: Prometheus metrics, OpenTelemetry tracing and request-scoped log fields.

``metrics``      the metric objects (every name in one place) and small record helpers
``tracing``      tracer provider from the standard ``OTEL_*`` variables; no-op when off
``calls``        one timer + span around each Redis and Triton round trip
``context``      the request context (request id, trace id) that log lines carry
``http``         pure ASGI middleware and ``/metrics`` for the REST app
``grpc``         the same for the gRPC server, as an interceptor
``multiproc``    prometheus_client multiprocess mode for several uvicorn workers

This package imports nothing on purpose: ``multiproc`` must run before prometheus_client is
imported (its value class is chosen at import), and ``gateway.__main__`` imports it first.
See docs/observability.md.
"""
