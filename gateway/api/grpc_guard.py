"""gRPC adapter of :class:`gateway.guard.Guard`: an interceptor around the Gateway service.

Runs inside :class:`gateway.api.grpc.GatewayErrorInterceptor`, so a rejection is a
``GatewayError`` mapped like any other: RESOURCE_EXHAUSTED (shed or rate-limited, with
``retry-after-s``), UNAUTHENTICATED, PERMISSION_DENIED. The key comes from the
``authorization: Bearer <key>`` or ``x-api-key`` metadata. Health and reflection are not
wrapped: never shed, never authenticated. The in-flight counter is the REST side's.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.api.grpc_wrap import Behavior, UnaryWrapInterceptor
from gateway.auth import current_principal
from gateway.guard import Guard


class GuardInterceptor(UnaryWrapInterceptor):
    def __init__(self, guard: Guard, service_name: str) -> None:
        super().__init__(service_name)
        self._guard = guard

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        guard = self._guard

        async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if not guard.in_flight.try_acquire():
                raise guard.overloaded()
            try:
                model = getattr(request, "model", None) or None
                principal = guard.authenticate(_presented_key(context), model)
                await guard.check_rate(principal)
                token = current_principal.set(principal)
                try:
                    return await behavior(request, context)
                finally:
                    current_principal.reset(token)
            finally:
                guard.in_flight.release()

        return admitted


def _presented_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """``authorization: Bearer <key>``, else ``x-api-key`` (as on the REST side)."""
    api_key: str | None = None
    for name, value in context.invocation_metadata() or ():
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and api_key is None:
            api_key = value.strip() or None
    return api_key
