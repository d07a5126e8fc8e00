"""An honest OpenAPI document: every problem+json answer a route can give, and how to log in.

The routes return raw ``Response`` objects (orjson, no response models on the hot path), so
FastAPI alone documents only a schemaless 200 and its own 422 shape, which the gateway never
sends. This post-processes the generated document once, by rules that also cover routes added
later: every API operation may answer 401/429/503 (key missing, rate limit, shed or a
dependency down); operations on ``/v1/models/{model}`` add 403 (allow-list) and 404; those with
a body add 400/413/422; predict adds 502/504. The schemathesis run in the suite holds the
document to what the server actually does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.api.middleware import HEALTH_PATHS
from gateway.api.problems import PROBLEM_JSON

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. Never a stack trace or an internal address.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "examples": ["urn:gateway:error:InvalidRequest"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {
            "type": "string",
            "description": "The offending request field, e.g. instances[3].features.amount.",
        },
        "request_id": {"type": "string"},
    },
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_WHY: dict[int, str] = {
    400: "Body is not JSON, or is empty.",
    401: "No API key, or an invalid one (docs/security.md).",
    403: "The API key may not use this model.",
    404: "Unknown model, or `cache: only` without a fresh cached prediction.",
    413: "Body larger than GATEWAY_MAX_BODY_BYTES.",
    422: "Invalid request; `field` names the offending field.",
    429: "The client's rate limit is exhausted; Retry-After says when a token is available.",
    502: "Triton failed the request for a reason that is not the input.",
    503: "Shed (the process is at its in-flight limit), or Redis/Triton unavailable.",
    504: "Triton did not answer within its deadline.",
}
_PREDICTION = {
    "type": "object",
    "required": ["entity_id", "scores", "source"],
    "properties": {
        "entity_id": {"type": "string"},
        "scores": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "source": {"type": "string"},
        "prediction_age_s": {"type": ["number", "null"]},
        "feature_age_s": {"type": ["number", "null"]},
    },
}
_PREDICT_200 = {
    "type": "object",
    "required": ["model", "model_version", "request_id"],
    "properties": {
        "model": {"type": "string"},
        "model_version": {"type": "string"},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": _PREDICTION},
        **_PREDICTION["properties"],  # type: ignore[dict-item]
    },
}
_MODELS_200 = {
    "type": "object",
    "required": ["models"],
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "version"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
        }
    },
}
_MODEL_200 = {
    "type": "object",
    "required": ["name", "served_version", "features", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "served_version": {"type": "string"},
        "features": {"type": "array", "items": {"type": "object"}},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
}
_HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}
SECURITY_SCHEMES = {
    "ApiKeyBearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer"},
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def document(app: FastAPI, *, auth: bool) -> dict[str, Any]:
    """FastAPI's document for ``app``, with the gateway's real answers added."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if auth:
        components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _patch(path, method, operation, auth=auth)
    return schema


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    """Serve :func:`document` as /openapi.json (built on first use, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def _patch(path: str, method: str, operation: dict[str, Any], *, auth: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's own validation shape; ours is problem+json
    if path in HEALTH_PATHS:
        _json_200(responses, _HEALTH)
        if path == "/readyz":
            responses["503"] = {
                "description": "A dependency check failed (see `checks`).",
                "content": {"application/json": {"schema": _HEALTH}},
            }
        return
    if auth:
        operation["security"] = [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
    codes = [401, 429, 503] if auth else [503]
    if path.startswith("/v1/models/{model}"):
        codes += [403, 404] if auth else [404]
    elif "{" in path:
        codes.append(404)
    if "requestBody" in operation:
        codes += [400, 413, 422]
    elif "parameters" in operation:
        codes.append(422)
    if path.endswith("/predict"):
        codes += [502, 504]
        _json_200(responses, _PREDICT_200)
    elif path == "/v1/models" and method == "get":
        _json_200(responses, _MODELS_200)
    elif path == "/v1/models/{model}" and method == "get":
        _json_200(responses, _MODEL_200)
    for code in sorted(set(codes)):
        entry: dict[str, Any] = {
            "description": _WHY[code],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        if code in (429, 503, 504):
            entry["headers"] = _RETRY_AFTER
        responses.setdefault(str(code), entry)


def _json_200(responses: dict[str, Any], schema: dict[str, Any]) -> None:
    ok = responses.setdefault("200", {"description": "Successful Response"})
    ok["content"] = {"application/json": {"schema": schema}}
