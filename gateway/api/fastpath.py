"""The predict route, served before FastAPI sees the request.

``POST /v1/models/{model}/predict`` is nearly all of the traffic. Through FastAPI and
Starlette it would pass the app's entry points, the server-error and exception middlewares,
the telemetry and guard middlewares (each wrapping ``send`` in a closure of its own), the
router's match over every route, dependency solving and Starlette's request and response
objects. For a cache hit that was most of the process's CPU (docs/measurements.md). Here the
same steps run inline, in the same order and with the same shared pieces:

1. telemetry (:class:`~gateway.telemetry.http.HttpTelemetry`): metrics, server span, log
   context, the ``Server-Timing`` header and at most one log line;
2. the guard (:class:`~gateway.guard.Guard`): shed, API key and model allow-list, rate limit;
3. :func:`~gateway.api.predict.answer_predict`, which the FastAPI route (kept for the OpenAPI
   document) calls as well.

A bug in any of them is answered with an opaque 500 problem and logged with its traceback, as
the app's exception handler does for every other route. Every other request goes to FastAPI.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway.api.middleware import presented_key
from gateway.api.predict import Answer, answer_predict, problem_answer
from gateway.api.problems import PROBLEM_JSON_BYTES, UNHANDLED_BODY
from gateway.auth import current_principal
from gateway.errors import GatewayError
from gateway.guard import Guard
from gateway.telemetry.http import HttpTelemetry

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]
Respond = Callable[[int, list[Header], bytes], Awaitable[None]]
"""Sends the whole answer: status, headers and body."""

PREDICT_ROUTE = "POST /v1/models/{model}/predict"
"""The route label, exactly as FastAPI's router would give it."""
_UNHANDLED = Answer(
    500,
    [(b"content-type", PROBLEM_JSON_BYTES), (b"content-length", b"%d" % len(UNHANDLED_BODY))],
    UNHANDLED_BODY,
    None,
)


class PredictFastPath:
    def __init__(self, *, guard: Guard, telemetry: HttpTelemetry, max_body_bytes: int) -> None:
        self._guard = guard
        self._telemetry = telemetry
        self.max_body_bytes = max_body_bytes
        # The shed answer is built once: shedding must stay cheap when it matters most.
        self._shed = problem_answer(guard.overloaded())

    def serves(self, model: str) -> bool:
        """Whether ``model`` is one this gateway serves."""
        return self._telemetry.serves(model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        """Serve over ASGI (any server, the test clients included)."""

        async def respond(status: int, headers: list[Header], body: bytes) -> None:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.serve(scope, receive, model, respond)

    async def serve(
        self, scope: Scope, body: Receive | bytes, model: str, respond: Respond
    ) -> None:
        """Answer one predict request through ``respond``; uvicorn's workers call this
        directly from :class:`~gateway.api.http_protocol.GatewayHttpProtocol`, with the body
        already buffered (``bytes``); over ASGI, ``body`` is ``receive``."""
        telemetry = self._telemetry
        tracked = telemetry.start(scope)
        answer: Answer | None = None
        raised: BaseException | None = None
        try:
            try:
                answer = await self._answer(scope, body, model)
            except Exception as error:
                # The traceback goes to the server log only; the client gets an opaque 500.
                log.exception("unhandled error", extra={"path": scope["path"]})
                raised, answer = error, _UNHANDLED
            await respond(answer.status, [*answer.headers, tracked.server_timing()], answer.body)
        except BaseException as error:  # cancelled mid-answer: recorded, then re-raised
            raised = error
            raise
        finally:
            status = 0 if answer is None else answer.status
            error_name = None if answer is None else answer.error_name
            telemetry.finish(
                scope,
                tracked,
                PREDICT_ROUTE,
                status,
                error_name,
                raised,
                telemetry.label_for(model),
            )

    async def _answer(self, scope: Scope, body: Receive | bytes, model: str) -> Answer:
        guard = self._guard
        if not guard.in_flight.try_acquire():
            return self._shed
        try:
            headers = scope["headers"]
            try:
                principal = guard.authenticate(presented_key(headers), model)
                if principal.rate_per_s > 0:  # else check_rate has nothing to do
                    await guard.check_rate(principal)
            except GatewayError as error:
                return problem_answer(error)
            current_principal.set(principal)  # the request's own task: nothing to reset
            service = scope["state"]["service"]
            return await answer_predict(service, model, headers, body, self.max_body_bytes)
        finally:
            guard.in_flight.release()


def predict_model(scope: Scope) -> str | None:
    """The model of a ``POST /v1/models/{model}/predict`` request, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    return predict_path_model(scope["path"])


def predict_path_model(path: str) -> str | None:
    """The model of a ``/v1/models/{model}/predict`` path, else None."""
    parts = path.split("/")
    # ["", "v1", "models", model, "predict"], exactly as the router's pattern matches it.
    if len(parts) != 5 or parts[1:3] != ["v1", "models"] or parts[4] != "predict" or not parts[3]:
        return None
    return parts[3]


class GatewayApp(FastAPI):
    """FastAPI, with predict requests handed to :class:`PredictFastPath` first."""

    fast_path: PredictFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        if fast_path is not None:
            model = predict_model(scope)
            if model is not None:
                await fast_path(scope, receive, send, model)
                return
        await super().__call__(scope, receive, send)
