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

from gateway.api.body import read_json
from gateway.api.problems import problem_headers, problem_parts
from gateway.errors import GatewayError
from gateway.service import PredictionService, PredictOutcome
from gateway.telemetry import tracing
from gateway.telemetry.context import bind_request_id
from gateway.validation import (
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
    receive: Receive,
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
        body = await read_json(receive, length, max_body_bytes)
        parsed = tracing.call("validate", parse_predict_body, spec, body)
        outcome = await service.predict(
            spec,
            parsed,
            timeout_s=None if budget is None else budget - (time.monotonic() - arrived),
        )
    except GatewayError as error:
        return problem_answer(error, request_id)
    payload = _single(outcome) if "instances" not in body else _batch(outcome)
    payload["request_id"] = request_id
    encoded = orjson.dumps(payload)
    out = [_JSON, (b"content-length", b"%d" % len(encoded))]
    out += _ladder_headers(outcome)
    out.append((b"x-request-id", request_id.encode()))
    return Answer(200, out, encoded, None)


def _prediction_body(outcome: PredictOutcome, index: int, names: list[str]) -> dict[str, Any]:
    p = outcome.predictions[index]
    return {
        "entity_id": p.entity_id,
        "scores": None if p.scores is None else dict(zip(names, p.scores, strict=True)),
        "source": p.source,
        "prediction_age_s": _round(p.prediction_age_s),
        "feature_age_s": _round(p.feature_age_s),
        "flags": list(p.flags),
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


def _ladder_headers(outcome: PredictOutcome) -> list[tuple[bytes, bytes]]:
    """Which rung answered, in headers too; for a batch the oldest ages and every source."""
    predictions = outcome.predictions
    if len(predictions) == 1:
        p = predictions[0]
        sources: str = p.source
        prediction_age, feature_age = p.prediction_age_s, p.feature_age_s
    else:
        sources = ",".join(sorted({p.source for p in predictions}))
        prediction_age = max(
            (p.prediction_age_s for p in predictions if p.prediction_age_s is not None),
            default=None,
        )
        feature_age = max(
            (p.feature_age_s for p in predictions if p.feature_age_s is not None), default=None
        )
    headers = [
        (b"x-prediction-source", sources.encode()),
        (b"x-model-version", outcome.model_version.encode()),
    ]
    if prediction_age is not None:
        headers.append((b"x-prediction-age", b"%.3f" % prediction_age))
    if feature_age is not None:
        headers.append((b"x-feature-age", b"%.3f" % feature_age))
    return headers


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
