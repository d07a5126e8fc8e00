"""Base for the gateway's gRPC interceptors: wrap each unary method of one service, once.

grpc.aio asks the interceptor for a handler on every call; the wrapped handler is built on the
first call of a method and cached, so per call the cost is one dict lookup. Other services
(health, reflection) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class UnaryWrapInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc: no stubs
    def __init__(self, service_name: str) -> None:
        self._prefix = f"/{service_name}/"
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """The behaviour to run instead of ``behavior`` for ``method``."""
        raise NotImplementedError

    def rebuild(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to cache for ``method``: by default ``handler`` with its behaviour
        wrapped (``wrap``); override to change other parts of it."""
        return grpc.unary_unary_rpc_method_handler(
            self.wrap(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or not method.startswith(self._prefix):
            return handler
        wrapped = self._wrapped[method] = self.rebuild(method, handler)
        return wrapped
