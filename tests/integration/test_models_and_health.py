"""Model listing, model schema, liveness and readiness."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.helpers import fraud_spec

pytestmark = pytest.mark.integration


def test_list_models_names_the_served_version(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()

    assert body["models"] == [
        {"name": "fraud_scorer", "version": "1", "description": fraud_spec().description}
    ]


def test_get_model_returns_the_feature_schema(client: httpx.Client) -> None:
    body = client.get("/v1/models/fraud_scorer").json()

    assert body["served_version"] == "1"
    assert [f["name"] for f in body["features"]] == [f.name for f in fraud_spec().features]
    amount = body["features"][0]
    assert amount == {
        "name": "amount", "dtype": "float", "min": 0.0, "max": 1000000.0,
        "default": None, "required": True,
    }  # fmt: skip
    assert body["cache"] == {
        "ttl_s": 86400, "max_age_s": 3600.0, "stale_while_revalidate_s": 300.0,
        "max_staleness_s": 21600.0,
    }  # fmt: skip
    assert body["fallback"] == {
        "default_scores": {"fraud_probability": 0.013}, "without_feature_store": "fail"
    }  # fmt: skip
    assert body["feature_freshness"] == {"max_age_s": 604800.0, "on_violation": "flag"}
    assert body["outputs"] == [{"name": "fraud_probability", "dtype": "FP32"}]


def test_healthz_and_readyz_when_everything_is_up(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"redis": True, "model:fraud_scorer": True},
    }


def test_openapi_schema_documents_the_predict_body(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()

    body = schema["paths"]["/v1/models/{model}/predict"]["post"]["requestBody"]
    titles = [s["title"] for s in body["content"]["application/json"]["schema"]["oneOf"]]
    assert titles == ["Single", "Batch"]
