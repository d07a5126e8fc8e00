"""The REST telemetry middleware on a small app: routes, outcomes, error types, log lines.

The answers given before routing (the guard's shed answer) are built with the real
``problem_messages`` so the error type is read from the body exactly as in production.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.problems import install_problem_handlers, problem_messages
from gateway.errors import ModelNotFound, Overloaded
from gateway.logs import JsonFormatter
from gateway.telemetry import metrics as telemetry_metrics
from gateway.telemetry.context import bind_request_id
from gateway.telemetry.http import HttpTelemetry, _problem_type, install_telemetry


def flushed_sample(name: str, labels: dict[str, str]) -> float | None:
    """A sample as a scrape of this process would see it (the API metrics are buffered)."""
    telemetry_metrics.flush()
    return REGISTRY.get_sample_value(name, labels)


MODELS = ("unit_http_model",)


class ShedEverything:
    """Stands in for the guard: answers 503 Overloaded before routing when asked to."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._shed = problem_messages(Overloaded("at the bound"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/shed"):
            await send(self._shed[0])
            await send(self._shed[1])
            return
        await self.app(scope, receive, send)


def make_app(slow_request_s: float = 10.0) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str) -> dict[str, str]:
        bind_request_id("unit-req-1")
        if model not in MODELS:
            raise ModelNotFound(f"model {model!r} is not served here")
        return {"ok": "yes"}

    @app.get("/shed/{thing}")
    async def never() -> None:  # pragma: no cover - the stand-in guard answers first
        raise AssertionError

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    install_problem_handlers(app)
    app.add_middleware(ShedEverything)
    telemetry = HttpTelemetry(
        models=MODELS, routes=app.router.routes, slow_request_s=slow_request_s
    )
    install_telemetry(app, telemetry)
    return app


def count(**labels: str) -> float:
    return flushed_sample("gateway_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gateway.requests")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.setLevel(old_level)
    logger.removeHandler(handler)


async def test_routes_models_and_outcomes_are_labelled() -> None:
    app = make_app()
    route = "POST /v1/models/{model}/predict"
    ok = {"transport": "http", "route": route, "model": "unit_http_model", "outcome": "ok"}
    unknown = {"transport": "http", "route": route, "model": "unknown", "outcome": "client_error"}
    shed = {"transport": "http", "route": "GET /shed/{thing}", "model": "", "outcome": "shed"}
    unmatched = {"transport": "http", "route": "unmatched", "model": "", "outcome": "client_error"}
    before = [count(**ok), count(**unknown), count(**shed), count(**unmatched)]
    shed_before = flushed_sample("gateway_shed_requests_total", {"transport": "http"})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        assert (await client.post("/v1/models/unit_http_model/predict")).status_code == 200
        assert (await client.post("/v1/models/card-000042/predict")).status_code == 404
        assert (await client.get("/shed/now")).status_code == 503
        assert (await client.get("/no/such/path/card-000042")).status_code == 404
        assert (await client.get("/metrics")).status_code == 200  # not counted itself
    after = [count(**ok), count(**unknown), count(**shed), count(**unmatched)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
    shed_after = flushed_sample("gateway_shed_requests_total", {"transport": "http"})
    assert (shed_after or 0) - (shed_before or 0) == 1
    errors = {"transport": "http", "error_type": "ModelNotFound"}
    assert (flushed_sample("gateway_errors_total", errors) or 0) >= 1
    assert "card-000042" not in (await _metrics_text(app))


async def test_answers_before_routing_get_the_template_of_an_included_route() -> None:
    # FastAPI keeps an included router whole (one route without a template of its own): a
    # request the guard sheds before routing must still get its route's template.
    inner = APIRouter()

    @inner.get("/{thing}")
    async def never(thing: str) -> None:  # pragma: no cover - the stand-in guard answers first
        raise AssertionError

    outer = APIRouter()
    outer.include_router(inner, prefix="/things")
    app = FastAPI()
    app.include_router(outer, prefix="/shed")
    app.add_middleware(ShedEverything)
    telemetry = HttpTelemetry(models=MODELS, routes=app.router.routes, slow_request_s=10.0)
    install_telemetry(app, telemetry)
    shed = {
        "transport": "http",
        "route": "GET /shed/things/{thing}",
        "model": "",
        "outcome": "shed",
    }
    before = count(**shed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        assert (await client.get("/shed/things/card-000042")).status_code == 503
    assert count(**shed) == before + 1


async def test_an_unusual_method_is_labelled_other() -> None:
    app = make_app()
    other = {"transport": "http", "route": "_OTHER /v1/models/{model}/predict", "model": "unknown"}
    before = count(**other, outcome="client_error")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        response = await client.request("PROPFIND", "/v1/models/card-000042/predict")
    assert response.status_code == 405
    assert count(**other, outcome="client_error") == before + 1
    assert "PROPFIND" not in (await _metrics_text(app))


async def _metrics_text(app: FastAPI) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        return (await client.get("/metrics")).text


async def test_an_unhandled_exception_is_an_error_outcome(log_lines: io.StringIO) -> None:
    app = make_app()
    labels = {"transport": "http", "route": "GET /boom", "model": "", "outcome": "error"}
    before = count(**labels)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        assert (await client.get("/boom")).status_code == 500
    assert count(**labels) == before + 1
    unhandled = {"transport": "http", "error_type": "Unhandled"}
    assert (flushed_sample("gateway_errors_total", unhandled) or 0) >= 1
    # The traceback line is problems.py's; the middleware adds no second line for it.
    assert "request failed" not in log_lines.getvalue()


async def test_slow_requests_get_one_warning_line_with_the_request_id(
    log_lines: io.StringIO,
) -> None:
    app = make_app(slow_request_s=0.0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        await client.post("/v1/models/unit_http_model/predict")
    (line,) = [orjson.loads(x) for x in log_lines.getvalue().splitlines()]
    assert line["msg"] == "slow request"
    assert line["level"] == "warning"
    assert line["request_id"] == "unit-req-1"
    assert line["route"] == "POST /v1/models/{model}/predict"


async def test_fast_successful_requests_log_nothing_and_rejections_only_at_info(
    log_lines: io.StringIO,
) -> None:
    app = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        await client.post("/v1/models/unit_http_model/predict")
        await client.get("/shed/now", headers={"x-request-id": "unit-shed-1"})
    (line,) = [orjson.loads(x) for x in log_lines.getvalue().splitlines()]
    assert line["level"] == "info"
    assert line["msg"] == "request rejected"
    assert line["error_type"] == "Overloaded"
    assert line["request_id"] == "unit-shed-1"  # the caller's X-Request-ID


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"urn:gateway:error:Overloaded","title":"x"}', "Overloaded"),
        (b'{"type":"about:blank","title":"Not Found"}', None),
        (b"", None),
        (b'{"type":"urn:gateway:error:', None),
    ],
)
def test_the_error_type_is_read_from_the_problem_type(body: bytes, expected: str | None) -> None:
    assert _problem_type(body) == expected
