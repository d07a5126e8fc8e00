"""schemathesis against the live gateway: the OpenAPI document is honest, no input gives a 5xx.

The schema is the one the gateway serves at /openapi.json (fetched with the test API key);
requests carry the key and go to the real process with real Redis and Triton behind it. Each
operation gets a bounded number of generated cases (the whole run stays well under 20 s).

Path names are pinned to the served model and its namespace (unknown names are covered
elsewhere), so generated bodies reach validation, Redis and Triton; the entity schemathesis
generates most often ("0") has stored features, so many cases are scored for real.

Checks: no 5xx; every status code, content type, declared header and body conforms to the
document. (``positive_data_acceptance`` is not run: the document cannot express per-model
feature bounds, so schema-valid bodies are rightly rejected with a documented 422.)
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.helpers import TYPICAL, put_features

pytestmark = pytest.mark.integration
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


PINNED = {"model": "fraud_scorer", "namespace": "card"}


@pytest.fixture(scope="module")
def live_schema(gateway: GatewayProcess, redis_server: RedisServer) -> Any:
    with redis.Redis.from_url(redis_server.url) as kv:
        put_features(kv, "0", TYPICAL)
    return schemathesis.openapi.from_url(
        f"{gateway.url}/openapi.json", headers=gateway.headers, timeout=10
    )


schema = schemathesis.pytest.from_fixture("live_schema")


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: Any, gateway: GatewayProcess) -> None:
    for name, value in PINNED.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = value
    case.call_and_validate(headers=gateway.headers, checks=CHECKS, timeout=10)


def test_document_describes_every_error_and_the_api_key(gateway: GatewayProcess) -> None:
    import httpx

    document = httpx.get(f"{gateway.url}/openapi.json", headers=gateway.headers).json()
    predict = document["paths"]["/v1/models/{model}/predict"]["post"]

    assert set(predict["responses"]) >= {
        "200", "400", "401", "403", "404", "413", "422", "429", "503", "504",
    }  # fmt: skip
    for code in ("401", "422", "429", "503"):
        assert "application/problem+json" in predict["responses"][code]["content"]
    assert "Retry-After" in predict["responses"]["429"]["headers"]
    assert predict["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]
    assert set(document["components"]["securitySchemes"]) == {"ApiKeyBearer", "ApiKeyHeader"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
