"""REST error answers: ``application/problem+json`` bodies built from the error tree."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gateway.errors import GatewayError, Unauthenticated

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
PROBLEM_JSON_BYTES = PROBLEM_JSON.encode()
UNHANDLED_BODY = orjson.dumps({"type": "about:blank", "title": "Internal error", "status": 500})
"""The answer to a bug: opaque, the traceback goes to the server log only."""


def problem_parts(
    error: GatewayError, request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The problem+json body and the headers that go with it (Retry-After, WWW-Authenticate)."""
    body = error.problem()
    if request_id:
        body["request_id"] = request_id
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    if request_id:
        headers["X-Request-ID"] = request_id
    return orjson.dumps(body), headers


def problem_response(error: GatewayError, request_id: str | None = None) -> Response:
    body, headers = problem_parts(error, request_id)
    return Response(body, status_code=error.http_status, media_type=PROBLEM_JSON, headers=headers)


def problem_headers(body: bytes, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs of a problem answer (content type and length first)."""
    return [
        (b"content-type", PROBLEM_JSON_BYTES),
        (b"content-length", b"%d" % len(body)),
        *((name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()),
    ]


def problem_messages(
    error: GatewayError, request_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a problem answer, for middleware that answers before routing."""
    body, headers = problem_parts(error, request_id)
    start = {
        "type": "http.response.start",
        "status": error.http_status,
        "headers": problem_headers(body, headers),
    }
    return start, {"type": "http.response.body", "body": body}


def install_problem_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return problem_response(exc, getattr(request.state, "request_id", None))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        body = {
            "type": "about:blank",
            "title": HTTPStatus(exc.status_code).phrase,
            "status": exc.status_code,
            "detail": str(exc.detail),
        }
        return Response(
            orjson.dumps(body),
            status_code=exc.status_code,
            media_type=PROBLEM_JSON,
            headers=exc.headers,
        )

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()))
        body = {
            "type": "urn:gateway:error:InvalidRequest",
            "title": "Invalid request",
            "status": 422,
            "detail": str(first.get("msg", "invalid request")),
            "field": field,
        }
        return Response(orjson.dumps(body), status_code=422, media_type=PROBLEM_JSON)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # The traceback goes to the server log only; clients get an opaque 500.
        log.exception("unhandled error", extra={"path": request.url.path})
        return Response(UNHANDLED_BODY, status_code=500, media_type=PROBLEM_JSON)

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)
