"""REST transport: JSON in → PredictionService → JSON out. No business rules here."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from gateway.api.body import read_json
from gateway.api.predict import answer_predict
from gateway.auth import caller_may_use
from gateway.errors import InvalidRequest, MalformedBody
from gateway.service import PredictionService
from gateway.validation import parse_feature_push, parse_feature_update

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
_PUSH_FEATURES_SCHEMA = {
    "type": "object",
    "minProperties": 1,
    "description": "Feature values by name (declared by a model that reads this namespace).",
    "additionalProperties": {"oneOf": [{"type": "number"}, {"type": "boolean"}]},
}
_EVENT_TIME_SCHEMA = {
    "description": "When the values became true: Unix seconds or RFC 3339 (default: now). "
    "Updates older than the stored event time are skipped.",
    "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON request body (the routes parse it by hand)."""
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


_PUSH_PROPERTIES = {"features": _PUSH_FEATURES_SCHEMA, "event_time": _EVENT_TIME_SCHEMA}
_PUSH_ONE = _json_body(
    {
        "type": "object",
        "required": ["features"],
        "additionalProperties": False,
        "properties": _PUSH_PROPERTIES,
    }
)
MAX_PUSH_ENTITIES = 1000
_PUSH_MANY = _json_body(
    {
        "type": "object",
        "required": ["updates"],
        "additionalProperties": False,
        "properties": {
            "updates": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PUSH_ENTITIES,
                "items": {
                    "type": "object",
                    "required": ["entity_id", "features"],
                    "additionalProperties": False,
                    "properties": {
                        "entity_id": {"type": "string", "minLength": 1},
                        **_PUSH_PROPERTIES,
                    },
                },
            }
        },
    }
)
_CACHE_SCHEMA = {"type": "string", "enum": ["prefer", "bypass", "only"], "default": "prefer"}
_PREDICT_BODY = _json_body(
    {
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
)


@router.post("/v1/models/{model}/predict", openapi_extra=_PREDICT_BODY, tags=["predict"])
async def predict(model: str, request: Request, service: ServiceDep) -> Response:
    """Score one entity (``entity_id``) or a batch (``instances``)."""
    # Served by gateway.api.fastpath before FastAPI routing; declared here for the OpenAPI
    # document, and answered by the same function should a request ever get this far.
    answer = await answer_predict(
        service,
        model,
        request.scope["headers"],
        request.receive,
        request.app.state.settings.max_body_bytes,
    )
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers = answer.headers
    return response


@router.put("/v1/features/{namespace}/{entity_id}", openapi_extra=_PUSH_ONE, tags=["features"])
async def push_entity_features(
    namespace: str, entity_id: str, request: Request, service: ServiceDep
) -> Response:
    """Write one entity's features as of ``event_time``; retires its cached predictions."""
    specs = service.namespace_specs(namespace)
    body = await _read_json(request)
    if not isinstance(body, dict):
        raise MalformedBody("request body must be a JSON object", field="body")
    if "entity_id" in body:
        raise InvalidRequest("entity_id is taken from the path", field="entity_id")
    update = parse_feature_update(specs, {**body, "entity_id": entity_id}, "", now=time.time())
    report = await service.push_features(namespace, [update])
    payload = {
        "namespace": namespace,
        "entity_id": update.entity_id,
        "applied": report.applied == 1,
        "event_time": update.event_time,
    }
    return Response(orjson.dumps(payload), media_type=JSON)


@router.post("/v1/features/{namespace}", openapi_extra=_PUSH_MANY, tags=["features"])
async def push_features(namespace: str, request: Request, service: ServiceDep) -> Response:
    """Write many entities' features; updates older than what is stored are skipped."""
    specs = service.namespace_specs(namespace)
    body = await _read_json(request)
    updates = parse_feature_push(specs, body, now=time.time(), max_entities=MAX_PUSH_ENTITIES)
    report = await service.push_features(namespace, updates)
    payload = {
        "namespace": namespace,
        "applied": report.applied,
        "skipped_older": report.skipped_older,
    }
    return Response(orjson.dumps(payload), media_type=JSON)


@router.get("/v1/models", tags=["models"])
async def list_models(service: ServiceDep) -> Response:
    models = [
        {
            "name": spec.name,
            "version": service.served_versions[spec.name],
            "description": spec.description,
        }
        for spec in service.specs.values()
        if caller_may_use(spec.name)  # a key sees only the models it may use
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


async def _read_json(request: Request) -> Any:
    return await read_json(
        request.receive,
        request.headers.get("content-length"),
        request.app.state.settings.max_body_bytes,
    )
