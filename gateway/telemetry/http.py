"""REST telemetry: a pure ASGI middleware (metrics, server span, log context) and ``/metrics``.

The middleware is the app's outermost one, so it sees every answer, including those the
guard gives before routing (shed, unauthenticated, rate-limited). The error type of an
error answer is read from the problem body's ``type`` URN (``urn:gateway:error:<Class>``),
which every error answer carries, so the label is exactly what the client was told; it is
checked against the error tree, so the label set stays closed.

Health probes, ``/metrics`` and the API docs are not measured or traced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence

from fastapi import FastAPI, Request, Response
from opentelemetry.trace import Span, StatusCode
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.telemetry import metrics, multiproc, tracing
from gateway.telemetry.context import RequestContext, current

log = logging.getLogger("gateway.requests")

UNTRACKED_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/metrics/", "/docs", "/redoc", "/openapi.json"}
)
_MODEL_PREFIX = "/v1/models/"
_PROBLEM_PREFIX = b'{"type":"urn:gateway:error:'
_MAX_CACHED_PATHS = 512
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"}
)
"""Methods a route label may carry; any other becomes ``_OTHER`` (as OpenTelemetry's HTTP
conventions do), so the label set stays closed whatever the HTTP parser accepts."""


class _Answer:
    __slots__ = ("error_name", "status")

    def __init__(self) -> None:
        self.status = 0
        self.error_name: str | None = None


class Tracked:
    """One request being measured: from :meth:`HttpTelemetry.start` to ``finish``."""

    __slots__ = ("context", "server_span", "started", "token")

    def __init__(
        self, started: float, context: RequestContext, server_span: Span | None, token: object
    ) -> None:
        self.started = started
        self.context = context
        self.server_span = server_span
        self.token = token

    def server_timing(self) -> tuple[bytes, bytes]:
        """The gateway's own time so far, so a client can tell it from network and queueing."""
        return (b"server-timing", b"app;dur=%.1f" % ((time.perf_counter() - self.started) * 1000))


class HttpTelemetry:
    """Metrics, the server span, the log context and the one log line of a REST request.

    Shared by :class:`TelemetryMiddleware` (every route) and the predict fast path
    (``gateway.api.fastpath``), which calls :meth:`start` and :meth:`finish` itself.
    """

    def __init__(
        self, *, models: Iterable[str], routes: Sequence[BaseRoute], slow_request_s: float
    ) -> None:
        self._models = frozenset(models)
        self._routes = routes
        self._slow_request_s = slow_request_s
        self._in_flight = metrics.IN_FLIGHT_BY_TRANSPORT["http"]
        # Route templates of paths the router never saw (rejected before routing).
        self._matched: dict[tuple[str, str], str] = {}

    def start(self, scope: Scope) -> Tracked:
        started = time.perf_counter()
        context = RequestContext("http", scope["headers"])
        current.set(context)  # the request's own task: nothing to reset
        server_span = token = None
        if tracing.enabled:
            server_span, token = tracing.start_server_span(
                scope["method"],
                scope["headers"],
                tracing.ASGI_GETTER,
                {"http.request.method": scope["method"], "network.protocol.name": "http"},
            )
            context.span = server_span
        self._in_flight.inc()
        return Tracked(started, context, server_span, token)

    def finish(
        self,
        scope: Scope,
        tracked: Tracked,
        route: str,
        status: int,
        error_name: str | None,
        raised: BaseException | None,
        model: str | None = None,
    ) -> None:
        """``error_name``: the error class an error answer names; ``raised``: what escaped;
        ``model``: the model label, when the caller has it already (else read from the path)."""
        self._in_flight.dec()
        seconds = time.perf_counter() - tracked.started
        if model is None:
            model = self.model_label(scope["path"])
        error_type: str | None = None
        if raised is not None:
            status = status or 500
            outcome = metrics.outcome(500, type(raised))
            error_type = metrics.error_type_label(type(raised))
        elif status >= 400:
            error = metrics.error_class(error_name) if error_name else None
            error_type = error.__name__ if error is not None else "HTTPError"
            outcome = metrics.outcome(status, error)
        else:
            outcome = "ok"
        metrics.observe_request("http", route, model, outcome, seconds, error_type)
        server_span = tracked.server_span
        if server_span is not None:
            if server_span.is_recording():  # sampled: worth the attributes
                server_span.update_name(route if route != metrics.UNMATCHED else scope["method"])
                server_span.set_attribute("http.route", route.partition(" ")[2] or route)
                server_span.set_attribute("http.response.status_code", status)
                server_span.set_attribute("gateway.outcome", outcome)
                if model:
                    server_span.set_attribute("gateway.model", model)
                request_id = tracked.context.request_id
                if request_id is not None:
                    server_span.set_attribute("gateway.request_id", request_id)
                if error_type is not None:
                    server_span.set_attribute("error.type", error_type)
                if status >= 500:
                    server_span.set_status(StatusCode.ERROR)
            tracing.end_server_span(server_span, tracked.token)
        if raised is None and worth_a_line(outcome, seconds, self._slow_request_s):
            log_request(
                "http", route, model, status, outcome, error_type, seconds, self._slow_request_s
            )

    def route(self, scope: Scope) -> str:
        """The route label: the matched template, else the template the path would match."""
        method: str = scope["method"]
        if method not in _METHODS:
            method = "_OTHER"
        path = getattr(scope.get("route"), "path", None)
        if path is None:
            key = (method, scope["path"])
            label = self._matched.get(key)
            if label is None:
                label = self._match(scope, method)
                if len(self._matched) < _MAX_CACHED_PATHS:
                    self._matched[key] = label
            return label
        return f"{method} {path}"

    def _match(self, scope: Scope, method: str) -> str:
        path: str = scope["path"]
        for prefix, route in _flat_routes(self._routes):
            if not path.startswith(prefix):
                continue
            match, _ = route.matches({**scope, "path": path[len(prefix) :]} if prefix else scope)
            template = getattr(route, "path", None)
            if match is not Match.NONE and template is not None:
                return f"{method} {prefix}{template}"
        return metrics.UNMATCHED

    def model_label(self, path: str) -> str:
        if not path.startswith(_MODEL_PREFIX):
            return ""
        name = path[len(_MODEL_PREFIX) :].partition("/")[0]
        if not name:
            return ""
        return self.label_for(name)

    def serves(self, model: str) -> bool:
        """Whether ``model`` is a served model (its own label)."""
        return model in self._models

    def label_for(self, model: str) -> str:
        """A served model's own name, anything else ``unknown``: clients cannot grow the
        label set by making names up."""
        return model if self.serves(model) else metrics.UNKNOWN_MODEL


class TelemetryMiddleware:
    """Pure ASGI; outermost, so it sees every answer, the guard's included."""

    def __init__(self, app: ASGIApp, *, telemetry: HttpTelemetry) -> None:
        self.app = app
        self._telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACKED_PATHS:
            await self.app(scope, receive, send)
            return
        telemetry = self._telemetry
        tracked = telemetry.start(scope)
        answer = _Answer()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                message["headers"] = [*message.get("headers", ()), tracked.server_timing()]
            elif answer.status >= 400 and answer.error_name is None:
                answer.error_name = _problem_type(message.get("body", b""))
            await send(message)

        raised: BaseException | None = None
        try:
            await self.app(scope, receive, send_and_note)
        except BaseException as error:
            raised = error
            raise
        finally:
            telemetry.finish(
                scope, tracked, telemetry.route(scope), answer.status, answer.error_name, raised
            )


def _flat_routes(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """``(prefix, route)`` for every route, those of included routers too: FastAPI (0.16x)
    keeps an included router whole, as one route without a path template of its own."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is None:
            yield prefix, route
        else:
            local_prefix = getattr(getattr(route, "include_context", None), "prefix", "")
            yield from _flat_routes(included.routes, prefix + local_prefix)


def _problem_type(body: bytes) -> str | None:
    """``Class`` from a problem body starting ``{"type":"urn:gateway:error:Class"``."""
    if not body.startswith(_PROBLEM_PREFIX):
        return None
    end = body.find(b'"', len(_PROBLEM_PREFIX))
    return body[len(_PROBLEM_PREFIX) : end].decode("ascii", "replace") if end > 0 else None


def worth_a_line(outcome: str, seconds: float, slow_request_s: float) -> bool:
    """Whether :func:`log_request` writes anything: callers on the hot path ask first, which
    spares the call for the plain fast answer that nearly every request is."""
    return outcome != "ok" or seconds >= slow_request_s


def log_request(
    transport: str,
    route: str,
    model: str,
    status: int | str,
    outcome: str,
    error_type: str | None,
    seconds: float,
    slow_request_s: float,
) -> None:
    """At most one line per request: a failure (5xx), a slow request, or (INFO) a rejection."""
    if not worth_a_line(outcome, seconds, slow_request_s):
        return
    if outcome in metrics.SERVER_FAILURES:
        level = logging.ERROR if outcome == "error" else logging.WARNING
        message = "request failed"
    elif seconds >= slow_request_s:
        level, message = logging.WARNING, "slow request"
    else:
        level, message = logging.INFO, "request rejected"
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        message,
        extra={
            "transport": transport,
            "route": route,
            "model": model,
            "status": status,
            "outcome": outcome,
            "error_type": error_type,
            "duration_ms": round(seconds * 1000, 2),
        },
    )


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition (all workers' values in multiprocess mode)."""
    metrics.flush()  # this worker's own figures are exact; here, on the loop's thread
    if multiproc.directory() is None:
        body = metrics.exposition()
    else:
        body = await asyncio.to_thread(metrics.exposition)  # reads the workers' files
    return Response(body, media_type=metrics.CONTENT_TYPE)


def install_telemetry(app: FastAPI, telemetry: HttpTelemetry) -> None:
    """``/metrics`` and the telemetry middleware; call after every other middleware is added,
    so this one is outermost and sees every answer."""
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
