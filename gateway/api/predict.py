"""``POST /v1/models/{model}/predict`` over ASGI primitives: header pairs in, bytes out.

One implementation for the fast path (``gateway.api.fastpath``, which serves nearly all
traffic) and the FastAPI route that documents it. It works on the raw ASGI header pairs and
``receive``: Starlette's ``Request``, ``Headers`` and ``Response`` objects cost more per
request than everything else a cache hit does (docs/measurements.md, "what each bought").
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
from starlette.types import Receive

from gateway.api.body import parse_buffered_json, read_json
from gateway.api.problems import problem_headers, problem_parts
from gateway.errors import GatewayError
from gateway.service import EntityCacheMode, Prediction, PredictionService, PredictOutcome
from gateway.spec import ModelSpec
from gateway.telemetry import tracing
from gateway.telemetry.context import bind_request_id
from gateway.validation import (
    parse_entity_id,
    parse_predict_body,
    parse_timeout_header,
    request_budget,
    request_id_or_new,
)

_TIMEOUT = b"x-request-timeout-ms"  # validation.TIMEOUT_HEADER as ASGI spells it
_JSON = (b"content-type", b"application/json")


class Answer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    error_name: str | None
    """The error class an error answer names (the metrics' ``error_type``)."""


def problem_answer(error: GatewayError, request_id: str | None = None) -> Answer:
    body, headers = problem_parts(error, request_id)
    return Answer(error.http_status, problem_headers(body, headers), body, type(error).__name__)


async def answer_predict(
    service: PredictionService,
    model: str,
    headers: Sequence[tuple[bytes, bytes]],
    body_source: Receive | bytes,
    max_body_bytes: int,
) -> Answer:
    """Score one entity (``entity_id``) or a batch (``instances``); errors become problems."""
    supplied_id = timeout = length = None
    for name, value in headers:  # one pass; the first of repeated headers wins
        if name == b"x-request-id":
            if supplied_id is None:
                supplied_id = value.decode("latin-1")
        elif name == _TIMEOUT:
            if timeout is None:
                timeout = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value
    request_id = request_id_or_new(supplied_id)
    bind_request_id(request_id)  # log lines of this request carry it
    try:
        spec = service.spec(model)
        # The budget starts when the request arrives, before the body is read.
        arrived = time.monotonic()
        budget = request_budget(spec, parse_timeout_header(timeout))
        if isinstance(body_source, bytes):  # buffered already (the fast path's protocol)
            body = parse_buffered_json(body_source, max_body_bytes)
        else:
            body = await read_json(body_source, length, max_body_bytes)
        plain = _plain_entity(body)
        if plain is not None and not tracing.in_sampled_trace():
            # The common request, validated as parse_predict_body would (same errors).
            entity_id, mode = plain
            result = await service.predict_entity(
                spec,
                parse_entity_id(spec, entity_id, "entity_id"),
                mode=mode,
                timeout_s=None if budget is None else budget - (time.monotonic() - arrived),
            )
        else:
            parsed = tracing.call("validate", parse_predict_body, spec, body)
            result = await service.predict(
                spec,
                parsed,
                timeout_s=None if budget is None else budget - (time.monotonic() - arrived),
            )
    except GatewayError as error:
        return problem_answer(error, request_id)
    if isinstance(result, Prediction):
        return _single(spec, service.served_versions[spec.name], result, request_id)
    if "instances" not in body:
        return _single(spec, result.model_version, result.predictions[0], request_id)
    return _batch(result, request_id)


def _plain_entity(body: Any) -> tuple[Any, EntityCacheMode] | None:
    """The ``entity_id`` and cache mode of a body that asks for nothing else (no feature
    overrides, cache mode ``prefer`` or ``bypass``)."""
    if type(body) is not dict or "entity_id" not in body:
        return None
    if len(body) == 1:
        return body["entity_id"], "prefer"
    if len(body) == 2:
        mode = body.get("cache")
        if mode == "prefer" or mode == "bypass":
            return body["entity_id"], mode
    return None


def _single(spec: ModelSpec, model_version: str, p: Prediction, request_id: str) -> Answer:
    prediction_age, feature_age = _3dp(p.prediction_age_s), _3dp(p.feature_age_s)
    body = _prediction_body(p, spec.output_names, prediction_age, feature_age)
    encoded = orjson.dumps(
        {"model": spec.name, "model_version": model_version, **body, "request_id": request_id}
    )
    ladder = _ladder_headers(p.source, model_version, prediction_age, feature_age)
    return _ok(encoded, ladder, request_id)


def _batch(outcome: PredictOutcome, request_id: str) -> Answer:
    names = outcome.spec.output_names
    predictions = outcome.predictions
    encoded = orjson.dumps(
        {
            "model": outcome.spec.name,
            "model_version": outcome.model_version,
            "predictions": [
                _prediction_body(p, names, _3dp(p.prediction_age_s), _3dp(p.feature_age_s))
                for p in predictions
            ],
            "request_id": request_id,
        }
    )
    # For a batch: every source, and the oldest ages.
    sources = ",".join(sorted({p.source for p in predictions}))
    prediction_age = max(
        (p.prediction_age_s for p in predictions if p.prediction_age_s is not None),
        default=None,
    )
    feature_age = max(
        (p.feature_age_s for p in predictions if p.feature_age_s is not None), default=None
    )
    ladder = _ladder_headers(
        sources, outcome.model_version, _3dp(prediction_age), _3dp(feature_age)
    )
    return _ok(encoded, ladder, request_id)


def _ok(encoded: bytes, ladder: list[tuple[bytes, bytes]], request_id: str) -> Answer:
    headers = [_JSON, (b"content-length", b"%d" % len(encoded)), *ladder]
    headers.append((b"x-request-id", request_id.encode()))
    return Answer(200, headers, encoded, None)


def _prediction_body(
    p: Prediction, names: Sequence[str], prediction_age: bytes | None, feature_age: bytes | None
) -> dict[str, Any]:
    """The ages as the headers give them (``_3dp``): the body's numbers are those texts."""
    return {
        "entity_id": p.entity_id,
        "scores": None if p.scores is None else dict(zip(names, p.scores, strict=True)),
        "source": p.source,
        "prediction_age_s": None if prediction_age is None else float(prediction_age),
        "feature_age_s": None if feature_age is None else float(feature_age),
        "flags": list(p.flags),
    }


def _ladder_headers(
    sources: str, model_version: str, prediction_age: bytes | None, feature_age: bytes | None
) -> list[tuple[bytes, bytes]]:
    """Which rung answered, in headers too."""
    headers = [
        (b"x-prediction-source", sources.encode()),
        (b"x-model-version", model_version.encode()),
    ]
    if prediction_age is not None:
        headers.append((b"x-prediction-age", prediction_age))
    if feature_age is not None:
        headers.append((b"x-feature-age", feature_age))
    return headers


def _3dp(value: float | None) -> bytes | None:
    """An age to three decimal places. ``float()`` of this text is ``round(value, 3)``: both
    round the exact binary value half-even (tests/unit/test_predict_answer.py), and one
    formatting serves both the header and the body."""
    return None if value is None else b"%.3f" % value
