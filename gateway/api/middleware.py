"""REST adapter of :class:`gateway.guard.Guard`: a pure ASGI middleware, outside all routing.

Pure ASGI on purpose: Starlette's ``BaseHTTPMiddleware`` runs the app in a separate task
with memory streams in between, which costs far more per request than this wrapper (measured
in docs/security.md). A rejected request is answered here with a problem+json body before
its body is read, before routing, validation or any Redis/Triton work. Health endpoints and
``/metrics`` pass untouched: never shed, never authenticated.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import problem_messages
from gateway.auth import current_principal
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.guard import Guard

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_MODEL_PREFIX = "/v1/models/"


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, guard: Guard, public_paths: Iterable[str]) -> None:
        self.app = app
        self._guard = guard
        self._public = frozenset(public_paths)
        # The shed answer is built once: shedding must stay cheap when it matters most.
        self._shed = problem_messages(guard.overloaded())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._public:
            await self.app(scope, receive, send)
            return
        guard = self._guard
        if not guard.in_flight.try_acquire():
            await send(self._shed[0])
            await send(self._shed[1])
            return
        try:
            try:
                key = presented_key(scope["headers"])
                principal = guard.authenticate(key, _model(scope["path"]))
                await guard.check_rate(principal)
            except GatewayError as error:
                start, body = problem_messages(error)
                await send(start)
                await send(body)
                return
            token = current_principal.set(principal)
            try:
                await self.app(scope, receive, send)
            finally:
                current_principal.reset(token)
        finally:
            guard.in_flight.release()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """``Authorization: Bearer <key>``, else ``X-API-Key: <key>`` (Bearer wins if both)."""
    api_key: str | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip() or None
    return api_key


def _model(path: str) -> str | None:
    """The model a ``/v1/models/{model}[/...]`` path names (checked against the allow-list)."""
    if not path.startswith(_MODEL_PREFIX):
        return None
    return path[len(_MODEL_PREFIX) :].partition("/")[0] or None


def install_guard(app: FastAPI, guard: Guard, settings: Settings) -> None:
    """Outermost app middleware: nothing runs for a request the guard turns away."""
    public = HEALTH_PATHS | DOCS_PATHS if settings.auth.public_docs else HEALTH_PATHS
    app.add_middleware(GuardMiddleware, guard=guard, public_paths=public)
