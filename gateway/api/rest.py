"""REST transport: JSON in → PredictionService → JSON out. No business rules here."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.requests import ClientDisconnect

from gateway.errors import BodyTooLarge, ClientDisconnected, MalformedBody
from gateway.service import PredictionService, PredictOutcome
from gateway.validation import parse_predict_body, request_id_or_new

router = APIRouter()
JSON = "application/json"


async def get_service(request: Request) -> PredictionService:
    # async on purpose: FastAPI runs sync dependencies in a thread pool (a thread hop per
    # request, measured at several percent of the hot path).
    service: PredictionService = request.state.service
    return service


ServiceDep = Annotated[PredictionService, Depends(get_service)]

_FEATURES_SCHEMA = {
    "type": "object",
    "description": "Feature values that override stored ones, by feature name.",
    "additionalProperties": {"oneOf": [{"type": "number"}, {"type": "boolean"}]},
}
_CACHE_SCHEMA = {"type": "string", "enum": ["prefer", "bypass", "only"], "default": "prefer"}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "oneOf": [
                        {
                            "title": "Single",
                            "type": "object",
                            "required": ["entity_id"],
                            "additionalProperties": False,
                            "properties": {
                                "entity_id": {"type": "string", "minLength": 1},
                                "features": _FEATURES_SCHEMA,
                                "cache": _CACHE_SCHEMA,
                            },
                        },
                        {
                            "title": "Batch",
                            "type": "object",
                            "required": ["instances"],
                            "additionalProperties": False,
                            "properties": {
                                "instances": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["entity_id"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "entity_id": {"type": "string", "minLength": 1},
                                            "features": _FEATURES_SCHEMA,
                                        },
                                    },
                                },
                                "cache": _CACHE_SCHEMA,
                            },
                        },
                    ]
                }
            }
        },
    }
}


@router.post("/v1/models/{model}/predict", openapi_extra=_PREDICT_BODY, tags=["predict"])
async def predict(model: str, request: Request, service: ServiceDep) -> Response:
    """Score one entity (``entity_id``) or a batch (``instances``)."""
    request_id = _request_id(request)
    spec = service.spec(model)
    body = await _read_json(request, request.app.state.settings.max_body_bytes)
    outcome = await service.predict(spec, parse_predict_body(spec, body))
    payload = _single(outcome) if "instances" not in body else _batch(outcome)
    payload["request_id"] = request_id
    return Response(orjson.dumps(payload), media_type=JSON, headers={"X-Request-ID": request_id})


@router.get("/v1/models", tags=["models"])
async def list_models(service: ServiceDep) -> Response:
    models = [
        {
            "name": spec.name,
            "version": service.served_versions[spec.name],
            "description": spec.description,
        }
        for spec in service.specs.values()
    ]
    return Response(orjson.dumps({"models": models}), media_type=JSON)


@router.get("/v1/models/{model}", tags=["models"])
async def get_model(model: str, service: ServiceDep) -> Response:
    spec = service.spec(model)
    body = spec.as_dict()
    body["served_version"] = service.served_versions[spec.name]
    return Response(orjson.dumps(body), media_type=JSON)


@router.get("/healthz", tags=["health"])
async def healthz() -> Response:
    """The process is alive (no dependency checks: a Redis outage must not restart pods)."""
    return Response(b'{"status":"ok"}', media_type=JSON)


@router.get("/readyz", tags=["health"])
async def readyz(service: ServiceDep) -> Response:
    """Ready when Redis answers and every served model is ready in Triton."""
    checks = await service.readiness()
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type=JSON)


def _request_id(request: Request) -> str:
    request_id = request_id_or_new(request.headers.get("x-request-id"))
    request.state.request_id = request_id
    return request_id


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
    # uvicorn enforces no body limit, so chunked bodies are bounded while they stream in.
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
            chunks.append(chunk)
    except ClientDisconnect as e:
        raise ClientDisconnected("client closed the connection") from e
    raw = b"".join(chunks)
    if not raw:
        raise MalformedBody("request body is empty", field="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedBody(f"request body is not valid JSON: {e.msg}", field="body") from e


def _prediction_body(outcome: PredictOutcome, index: int, names: list[str]) -> dict[str, Any]:
    p = outcome.predictions[index]
    return {
        "entity_id": p.entity_id,
        "scores": None if p.scores is None else dict(zip(names, p.scores, strict=True)),
        "source": p.source,
        "prediction_age_s": _round(p.prediction_age_s),
        "feature_age_s": _round(p.feature_age_s),
    }


def _single(outcome: PredictOutcome) -> dict[str, Any]:
    body = {"model": outcome.spec.name, "model_version": outcome.model_version}
    body.update(_prediction_body(outcome, 0, [o.name for o in outcome.spec.outputs]))
    return body


def _batch(outcome: PredictOutcome) -> dict[str, Any]:
    names = [o.name for o in outcome.spec.outputs]
    return {
        "model": outcome.spec.name,
        "model_version": outcome.model_version,
        "predictions": [
            _prediction_body(outcome, i, names) for i in range(len(outcome.predictions))
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
