"""The predict route, served without FastAPI's routing layers.

``POST /v1/models/{model}/predict`` is nearly all of the traffic. Through FastAPI it passes
the exception middleware, the exit-stack middleware, the router's match over every route,
dependency solving and the endpoint wrappers: in a py-spy profile of the cache-hit path that
was about half of the process's CPU, more than Redis and the handler together
(docs/benchmark.md). This middleware sits innermost, inside the telemetry and guard
middlewares (so metrics, tracing, shedding, API keys and rate limits apply unchanged), and calls
the very same endpoint function with the same error rendering; every other request, and any
other method on this path, goes on to FastAPI. The route stays declared in FastAPI, so the
OpenAPI document is unchanged.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import problem_response
from gateway.api.rest import predict, router
from gateway.errors import GatewayError

PREDICT_PATH = "/v1/models/{model}/predict"


class PredictFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Set on the scope as the router would, so telemetry labels and names it the same.
        self._route = next(
            r for r in router.routes if isinstance(r, APIRoute) and r.path == PREDICT_PATH
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = _predict_model(scope)
        if model is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route
        scope["path_params"] = {"model": model}
        request = Request(scope, receive)
        try:
            response = await predict(model, request, scope["state"]["service"])
        except GatewayError as error:
            response = problem_response(error, getattr(request.state, "request_id", None))
        await response(scope, receive, send)


def _predict_model(scope: Scope) -> str | None:
    """The model of a ``POST /v1/models/{model}/predict`` request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    parts: list[str] = scope["path"].split("/")
    # ["", "v1", "models", model, "predict"], exactly as the router's pattern matches it.
    if len(parts) != 5 or parts[1:3] != ["v1", "models"] or parts[4] != "predict" or not parts[3]:
        return None
    return parts[3]


def install_fastpath(app: FastAPI) -> None:
    """Call before the guard and telemetry are installed: it must be the innermost middleware."""
    app.add_middleware(PredictFastPath)
