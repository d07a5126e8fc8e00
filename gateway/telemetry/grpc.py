"""gRPC telemetry: the REST middleware's twin, as a server interceptor.

:class:`TelemetryInterceptor` runs inside ``GatewayErrorInterceptor`` and outside the guard,
so it sees every ``GatewayError`` (shed, auth, validation, dependencies) as the exception it
is, before the error interceptor turns it into a status. Same metrics (``transport="grpc"``,
route = the full method name), same span shape, same log lines. Health and reflection are not
wrapped.

:class:`RefusalCounter`, the outermost interceptor, counts the calls grpc itself refuses at
``maximum_concurrent_rpcs``, which never reach any of the gateway's code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from opentelemetry.trace import Span, StatusCode

from gateway.api.grpc_wrap import Behavior, UnaryWrapInterceptor
from gateway.errors import GatewayError
from gateway.telemetry import metrics, tracing
from gateway.telemetry.context import RequestContext, current
from gateway.telemetry.http import log_request


class TelemetryInterceptor(UnaryWrapInterceptor):
    def __init__(self, service_name: str, models: Iterable[str], *, slow_request_s: float) -> None:
        super().__init__(service_name)
        self._service_name = service_name
        self._models = frozenset(models)
        self._slow_request_s = slow_request_s

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        in_flight = metrics.IN_FLIGHT_BY_TRANSPORT["grpc"]
        rpc_method = method.rsplit("/", 1)[-1]
        span_name = method.lstrip("/")
        models = self._models
        service_name = self._service_name
        slow_request_s = self._slow_request_s

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = context.invocation_metadata() or ()
            request_context = RequestContext("grpc", metadata)
            current.set(request_context)  # each RPC runs in a task of its own
            name = getattr(request, "model", "")
            model = (name if name in models else metrics.UNKNOWN_MODEL) if name else ""
            server_span = token = None
            if tracing.enabled:
                server_span, token = tracing.start_server_span(
                    span_name,
                    metadata,
                    tracing.GRPC_GETTER,
                    {"rpc.system": "grpc", "rpc.service": service_name, "rpc.method": rpc_method},
                )
                request_context.span = server_span
            in_flight.inc()
            raised: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as error:
                raised = error
                raise
            finally:
                in_flight.dec()
                seconds = time.perf_counter() - started
                error_type: str | None = None
                status = "OK"
                code = 0
                if raised is None:
                    outcome = "ok"
                else:
                    outcome = metrics.outcome(500, type(raised))
                    error_type = metrics.error_type_label(type(raised))
                    if isinstance(raised, GatewayError):
                        status, code = raised.grpc_status.name, raised.grpc_status.value[0]
                    else:
                        status, code = "UNKNOWN", grpc.StatusCode.UNKNOWN.value[0]
                metrics.observe_request("grpc", method, model, outcome, seconds, error_type)
                if server_span is not None:
                    if server_span.is_recording():  # sampled: worth the attributes
                        _annotate(server_span, code, outcome, model, request_context, error_type)
                    tracing.end_server_span(server_span, token)
                # Unexpected exceptions are logged (with traceback) by the error interceptor.
                if raised is None or isinstance(raised, GatewayError):
                    log_request(
                        "grpc", method, model, status, outcome, error_type, seconds, slow_request_s
                    )

        return observed


def _annotate(
    server_span: Span,
    code: int,
    outcome: str,
    model: str,
    request_context: RequestContext,
    error_type: str | None,
) -> None:
    server_span.set_attribute("rpc.grpc.status_code", code)
    server_span.set_attribute("gateway.outcome", outcome)
    if model:
        server_span.set_attribute("gateway.model", model)
    if request_context.request_id is not None:
        server_span.set_attribute("gateway.request_id", request_context.request_id)
    if error_type is not None:
        server_span.set_attribute("error.type", error_type)
    if outcome in metrics.SERVER_FAILURES:
        server_span.set_status(StatusCode.ERROR)


class _Admission:
    """One call's note: was its request read? Unread when its task ends = refused."""

    __slots__ = ("method", "read", "started")

    def __init__(self, method: str) -> None:
        self.method = method
        self.started = time.perf_counter()
        self.read = False

    def done(self, _task: object) -> None:
        if not self.read:
            metrics.observe_request(
                "grpc", self.method, "", "shed", time.perf_counter() - self.started, "Overloaded"
            )


_admission: ContextVar[_Admission | None] = ContextVar("gateway_grpc_admission", default=None)


class RefusalCounter(UnaryWrapInterceptor):
    """Counts calls refused by grpc's ``maximum_concurrent_rpcs`` as shed (``Overloaded``).

    grpc.aio decides the refusal when a call arrives but applies it only after resolving the
    call's handler through the interceptors; it then answers RESOURCE_EXHAUSTED ("Concurrent
    RPC limit exceeded!") without reading the request, and reports it nowhere. So this
    interceptor (the outermost: the only one grpc asks on every call once the others have
    cached their handlers) notes each Gateway call in its task and counts it when the task ends
    without the request having been deserialized. The same holds for a call whose client went
    away between its headers and its message: rare, and also a request never served. Counted
    with ``model=""`` (the request was never read); health and reflection calls are not.
    """

    def rebuild(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary,
            request_deserializer=_noting_read(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await super().intercept_service(continuation, handler_call_details)
        method: str = handler_call_details.method
        task = asyncio.current_task()
        # Only the Gateway service's own calls (the ones rebuilt above) are noted.
        if task is not None and method in self._wrapped:  # the deserializer runs in this task
            admission = _Admission(method)
            _admission.set(admission)
            task.add_done_callback(admission.done)
        return handler


def _noting_read(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        admission = _admission.get()
        if admission is not None:
            admission.read = True
        return raw if deserializer is None else deserializer(raw)

    return deserialize
