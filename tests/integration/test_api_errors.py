"""Bad input gets a 4xx problem+json naming the field, and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis

from tests.integration.helpers import TYPICAL, put_features

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"


@pytest.fixture
def entity(kv: redis.Redis) -> str:
    entity_id = f"card-e{uuid.uuid4().hex[:12]}"
    put_features(kv, entity_id, TYPICAL)
    return entity_id


def assert_problem(response: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text
    if field is not None:
        assert body["field"] == field
    return body


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ({"amount": "12.5"}, "features.amount"),
        ({"amount": -1}, "features.amount"),
        ({"amount": 1e7}, "features.amount"),
        ({"hour_of_day": 24}, "features.hour_of_day"),
        ({"hour_of_day": 3.5}, "features.hour_of_day"),
        ({"card_present": "yes"}, "features.card_present"),
        ({"card_present": 2}, "features.card_present"),
        ({"amount": None}, "features.amount"),
        ({"amount": True}, "features.amount"),
        ({"shoe_size": 42}, "features.shoe_size"),
    ],
)
def test_bad_feature_values_are_422_naming_the_feature(
    client: httpx.Client, kv: redis.Redis, entity: str, features: dict[str, Any], field: str
) -> None:
    response = client.post(PREDICT, json={"entity_id": entity, "features": features})

    assert_problem(response, 422, field)
    assert kv.exists(f"gw:p:fraud_scorer:1:{entity}") == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_rejected(client: httpx.Client, entity: str, literal: str) -> None:
    raw = f'{{"entity_id": "{entity}", "features": {{"amount": {literal}}}}}'

    response = client.post(PREDICT, content=raw, headers={"content-type": "application/json"})

    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] in ("body", "features.amount")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ([], 422, "body"),
        ({}, 422, "entity_id"),
        ({"entity_id": ""}, 422, "entity_id"),
        ({"entity_id": "a b"}, 422, "entity_id"),
        ({"entity_id": "x" * 129}, 422, "entity_id"),
        ({"entity_id": "card-1", "cache": "sometimes"}, 422, "cache"),
        ({"entity_id": "card-1", "extra": 1}, 422, "extra"),
        ({"entity_id": "card-1", "features": [1, 2]}, 422, "features"),
        ({"entity_id": "card-1", "features": {"amount": 5}, "cache": "only"}, 422, "features"),
        ({"instances": []}, 422, "instances"),
        ({"instances": "card-1"}, 422, "instances"),
        ({"instances": [{"entity_id": "card-1"}, 7]}, 422, "instances[1]"),
        ({"instances": [{"entity_id": "c", "features": {"amount": -5}}]}, 422,
         "instances[0].features.amount"),
        ({"instances": [{"entity_id": "card-1"}] * 257}, 422, "instances"),
    ],
)  # fmt: skip
def test_malformed_requests_are_4xx_naming_the_field(
    client: httpx.Client, body: Any, status: int, field: str
) -> None:
    assert_problem(client.post(PREDICT, json=body), status, field)


def test_invalid_json_is_400(client: httpx.Client) -> None:
    response = client.post(PREDICT, content=b'{"entity_id": ', headers={"content-type": "x"})

    assert_problem(response, 400, "body")


def test_empty_body_is_400(client: httpx.Client) -> None:
    assert_problem(client.post(PREDICT, content=b""), 400, "body")


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    padding = "x" * (1_048_576 + 10)

    response = client.post(PREDICT, content=f'{{"entity_id": "{padding}"}}'.encode())

    assert_problem(response, 413, "body")


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"entity_id": "'
        for _ in range(1100):
            yield b"y" * 1024
        yield b'"}'

    response = client.post(PREDICT, content=chunks())

    assert_problem(response, 413, "body")


def test_unknown_model_is_404(client: httpx.Client) -> None:
    body = assert_problem(
        client.post("/v1/models/no_such_model/predict", json={"entity_id": "a"}), 404, None
    )
    assert "no_such_model" in body["detail"]
    assert_problem(client.get("/v1/models/no_such_model"), 404, None)


def test_unknown_route_and_wrong_method_are_problem_json(client: httpx.Client) -> None:
    assert_problem(client.get("/nope"), 404, None)
    assert_problem(client.get(PREDICT), 405, None)


def test_entity_with_required_feature_missing_in_batch_names_the_instance(
    client: httpx.Client, entity: str
) -> None:
    unknown = f"card-u{uuid.uuid4().hex[:12]}"
    response = client.post(
        PREDICT, json={"instances": [{"entity_id": entity}, {"entity_id": unknown}]}
    )

    assert_problem(response, 422, "instances[1].features.amount")
