"""The predict fast path as a transport: guard, telemetry, errors, hand-over to FastAPI.

A stand-in service answers (no servers needed); the real path, with Redis and Triton, is
exercised by tests/integration (test_predict, test_access, test_overload, test_faults).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from gateway.api.fastpath import PREDICT_ROUTE, GatewayApp, PredictFastPath, predict_model
from gateway.api.problems import install_problem_handlers
from gateway.api.rest import router
from gateway.config import AuthSettings, LimitSettings, Settings
from gateway.errors import ModelNotFound
from gateway.guard import Guard
from gateway.keys import mint, write_keys_file
from gateway.spec import ModelSpec, load_specs
from gateway.telemetry import metrics as telemetry_metrics
from gateway.telemetry.http import HttpTelemetry, install_telemetry


def flushed_sample(name: str, labels: dict[str, str]) -> float | None:
    """A sample as a scrape of this process would see it (the API metrics are buffered)."""
    telemetry_metrics.flush()
    return REGISTRY.get_sample_value(name, labels)


MODEL = "unit_fast_model"


SPECS = load_specs(Path(__file__).resolve().parents[2] / "config" / "models.yaml")


class StandInService:
    """``spec`` is all the fast path asks before reading the body; it fails on demand."""

    def spec(self, model: str) -> ModelSpec:
        if model == "broken":
            raise RuntimeError("secret-internal-detail")
        if model == MODEL:
            return SPECS["fraud_scorer"]
        raise ModelNotFound(f"model {model!r} is not served here")


class WithState:
    """Sets the lifespan state uvicorn would put on every scope."""

    def __init__(self, app: GatewayApp, service: StandInService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {"service": self.service}
        await self.app(scope, receive, send)


def build(keys_file: Path, max_in_flight: int = 4) -> tuple[GatewayApp, Guard]:
    settings = Settings(
        auth=AuthSettings(keys_file=keys_file),
        limits=LimitSettings(max_in_flight=max_in_flight),
        max_body_bytes=64,
    )
    guard = Guard.from_settings(settings)
    app = GatewayApp()
    app.state.settings = settings
    app.include_router(router)
    install_problem_handlers(app)
    telemetry = HttpTelemetry(models=[MODEL], routes=app.router.routes, slow_request_s=10.0)
    install_telemetry(app, telemetry)
    app.fast_path = PredictFastPath(guard=guard, telemetry=telemetry, max_body_bytes=64)
    return app, guard


@pytest.fixture
def key(tmp_path: Path) -> tuple[str, Path]:
    full_key, entry = mint("unit-fast", ["*"])
    write_keys_file(tmp_path / "keys.yaml", [entry])
    return full_key, tmp_path / "keys.yaml"


@pytest.fixture
async def client(
    key: tuple[str, Path],
) -> AsyncIterator[tuple[httpx.AsyncClient, Guard, StandInService]]:
    app, guard = build(key[1])
    service = StandInService()
    transport = httpx.ASGITransport(app=WithState(app, service))
    headers = {"Authorization": f"Bearer {key[0]}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=headers) as c:
        yield c, guard, service


def count(name: str, **labels: str) -> float:
    return flushed_sample(name, labels) or 0.0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/m/predict", "m"),
        ("/v1/models//predict", None),
        ("/v1/models/m/predict/", None),
        ("/v1/models/m/explain", None),
        ("/v2/models/m/predict", None),
    ],
)
def test_only_the_predict_template_is_taken(path: str, expected: str | None) -> None:
    assert predict_model({"type": "http", "method": "POST", "path": path}) == expected
    assert predict_model({"type": "http", "method": "GET", "path": path}) is None


async def test_a_bug_is_an_opaque_500_logged_with_its_traceback(
    client: tuple[httpx.AsyncClient, Guard, StandInService], caplog: pytest.LogCaptureFixture
) -> None:
    http, guard, _ = client
    labels = {"transport": "http", "route": PREDICT_ROUTE, "model": "unknown"}
    before = count("gateway_request_duration_seconds_count", **labels, outcome="error")
    with caplog.at_level(logging.ERROR, logger="gateway.api.fastpath"):
        r = await http.post("/v1/models/broken/predict", json={"entity_id": "e1"})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Internal error", "status": 500}
    assert "secret-internal-detail" not in r.text
    assert r.headers["server-timing"].startswith("app;dur=")
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any("secret-internal-detail" in str(error) for error in logged)
    after = count("gateway_request_duration_seconds_count", **labels, outcome="error")
    assert after == before + 1
    assert count("gateway_errors_total", transport="http", error_type="Unhandled") >= 1
    assert guard.in_flight.in_flight == 0


async def test_errors_carry_the_request_id_and_the_route_label(
    client: tuple[httpx.AsyncClient, Guard, StandInService],
) -> None:
    http, _, _ = client
    labels = {"transport": "http", "route": PREDICT_ROUTE, "model": "unknown"}
    before = count("gateway_request_duration_seconds_count", **labels, outcome="client_error")
    r = await http.post(
        "/v1/models/nope/predict", json={"entity_id": "e1"}, headers={"X-Request-ID": "req-7"}
    )
    assert r.status_code == 404
    assert r.json()["type"] == "urn:gateway:error:ModelNotFound"
    assert r.json()["request_id"] == r.headers["x-request-id"] == "req-7"
    after = count("gateway_request_duration_seconds_count", **labels, outcome="client_error")
    assert after == before + 1


async def test_the_guard_answers_before_the_service(
    client: tuple[httpx.AsyncClient, Guard, StandInService],
) -> None:
    http, guard, _ = client
    r = await http.post(
        "/v1/models/broken/predict", json={"entity_id": "e1"}, headers={"Authorization": "x"}
    )
    assert r.status_code == 401  # not 500: the service was never asked
    assert r.headers["www-authenticate"].startswith("Bearer")
    guard.in_flight.in_flight = guard.in_flight.limit  # as if that many were in flight
    try:
        r = await http.post("/v1/models/broken/predict", json={"entity_id": "e1"})
    finally:
        guard.in_flight.in_flight = 0
    assert r.status_code == 503
    assert r.json()["type"] == "urn:gateway:error:Overloaded"
    assert "retry-after" in r.headers


async def test_other_methods_and_paths_go_to_fastapi(
    client: tuple[httpx.AsyncClient, Guard, StandInService],
) -> None:
    http, _, _ = client
    assert (await http.get("/v1/models/m/predict")).status_code == 405
    assert (await http.get("/healthz")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("content", "headers", "status", "error"),
    [
        (b"", {}, 400, "MalformedBody"),
        (b"{nope", {}, 400, "MalformedBody"),
        (b"x" * 65, {}, 413, "BodyTooLarge"),
    ],
)
async def test_bodies_are_bounded_and_parsed_before_any_work(
    key: tuple[str, Path], content: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    app, _ = build(key[1])
    transport = httpx.ASGITransport(app=WithState(app, StandInService()))
    auth = {"Authorization": f"Bearer {key[0]}", **headers}
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=auth) as c:
        r = await c.post(f"/v1/models/{MODEL}/predict", content=content)
        # Chunked (no Content-Length): the limit holds while the body streams in.
        chunked = await c.post(f"/v1/models/{MODEL}/predict", content=_chunks(content))
    for answer in (r, chunked):
        assert answer.status_code == status
        assert orjson.loads(answer.content)["type"] == f"urn:gateway:error:{error}"


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(content), 16):
        yield content[i : i + 16]


def test_model_labels_are_served_models_or_unknown() -> None:
    telemetry = HttpTelemetry(models=[MODEL], routes=[], slow_request_s=10.0)
    assert telemetry.label_for(MODEL) == MODEL
    for name in (MODEL, "made-up", f"{MODEL}x", "x" * 200):
        # The fast path's label is the one the path would give any other route.
        expected = telemetry.model_label(f"/v1/models/{name}/predict")
        assert telemetry.label_for(name) == expected
        assert expected in {MODEL, "unknown"}
