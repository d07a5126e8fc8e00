"""Dedicated stacks for tests that stop Triton or change the served model version."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from gateway.client import GatewayCallError, GatewayGrpcClient
from tests.integration.conftest import MODEL_REPOSITORY, SPEC_PATH, wait_until
from tests.integration.helpers import (
    TYPICAL,
    cached,
    put_cached,
    put_features,
    reference_score,
    spec_variant,
)
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"


async def _grpc_predict_error(gateway: GatewayProcess, entity: str) -> GatewayCallError:
    async with GatewayGrpcClient(
        gateway.grpc_target, api_key=gateway.api_key, timeout_s=5
    ) as grpc_client:
        with pytest.raises(GatewayCallError) as raised:
            await grpc_client.predict("fraud_scorer", entity)
    return raised.value


@pytest.fixture
def own_triton() -> Iterator[TritonServer]:
    with TritonServer(MODEL_REPOSITORY) as server:
        yield server


def test_readyz_false_and_fast_503_while_triton_is_down(
    redis_server: RedisServer, kv: redis.Redis, own_triton: TritonServer, tmp_path: Path
) -> None:
    # No default scores: the ladder ends in 503 (test_hybrid covers the degraded rungs).
    strict_spec = spec_variant(
        tmp_path, fallback={"default_scores": None, "without_feature_store": "fail"}
    )
    entity, fresh = f"card-d{uuid.uuid4().hex[:12]}", f"card-d{uuid.uuid4().hex[:12]}"
    put_features(kv, entity, TYPICAL)
    fresh_features_at = put_features(kv, fresh, TYPICAL)
    put_cached(kv, fresh, 0.0625, time.time(), features_at=fresh_features_at)
    with (
        GatewayProcess(
            spec_path=strict_spec, redis_url=redis_server.url, triton_url=own_triton.grpc_url
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as client,
    ):
        assert client.get("/readyz").status_code == 200

        own_triton.stop()
        ready = client.get("/readyz")
        started = time.perf_counter()
        miss = client.post(PREDICT, json={"entity_id": entity})
        miss_s = time.perf_counter() - started
        hit = client.post(PREDICT, json={"entity_id": fresh})

        assert ready.status_code == 503
        assert ready.json()["checks"] == {"redis": True, "model:fraud_scorer": False}
        assert miss.status_code == 503
        assert miss.headers["content-type"] == "application/problem+json"
        assert miss.headers["retry-after"] == "1"
        assert miss_s < 1.5, f"Triton outage answered in {miss_s:.2f}s"
        assert hit.status_code == 200
        assert hit.json()["source"] == "cache"
        assert client.get("/healthz").status_code == 200
        grpc_error = asyncio.run(_grpc_predict_error(gateway, entity))
        assert grpc_error.grpc_code == grpc.StatusCode.UNAVAILABLE
        assert grpc_error.error_type == "InferenceUnavailable"

        own_triton.start()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=10)
        recovered = wait_until(
            lambda: (
                (r := client.post(PREDICT, json={"entity_id": entity})).status_code == 200 and r
            ),
            timeout_s=10,
        )
        assert isinstance(recovered, httpx.Response)
        assert recovered.json()["source"] == "model"


def test_readyz_false_while_redis_is_down(triton_server: TritonServer) -> None:
    with (
        RedisServer() as own_redis,
        GatewayProcess(
            spec_path=SPEC_PATH, redis_url=own_redis.url, triton_url=triton_server.grpc_url
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as client,
    ):
        own_redis.stop()
        ready = client.get("/readyz")
        started = time.perf_counter()
        response = client.post(PREDICT, json={"entity_id": "card-000001"})
        elapsed_s = time.perf_counter() - started

        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] is False
        assert response.status_code == 503
        assert response.json()["title"] == "Feature store unavailable"
        assert elapsed_s < 1.5

        own_redis.start()
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=10)


@pytest.fixture
def two_version_repository(tmp_path: Path) -> Path:
    """fraud_scorer with versions 1 and 2 on disk; Triton's policy loads only the latest."""
    repository = tmp_path / "models"
    shutil.copytree(MODEL_REPOSITORY / "fraud_scorer", repository / "fraud_scorer")
    shutil.copytree(repository / "fraud_scorer/1", repository / "fraud_scorer/2")
    return repository


def test_new_model_version_never_serves_old_versions_cache(
    tmp_path: Path, redis_server: RedisServer, kv: redis.Redis, two_version_repository: Path
) -> None:
    spec = tmp_path / "models.yaml"
    spec.write_text(SPEC_PATH.read_text().replace('version: "1"', 'version: "latest"'))
    entity = f"card-v{uuid.uuid4().hex[:12]}"
    features_at = put_features(kv, entity, TYPICAL)
    put_cached(kv, entity, 0.5, time.time(), version="1", features_at=features_at)

    with (
        TritonServer(two_version_repository) as triton,
        GatewayProcess(
            spec_path=spec, redis_url=redis_server.url, triton_url=triton.grpc_url
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as client,
    ):
        body = client.post(PREDICT, json={"entity_id": entity}).json()
        listed = client.get("/v1/models").json()["models"][0]

    assert listed["version"] == "2"
    assert body["model_version"] == "2"
    assert body["source"] == "model"
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(TYPICAL), abs=1e-6)
    assert cached(kv, entity, version="1") is not None  # old entries are left to expire
    record = wait_until(lambda: cached(kv, entity, version="2"))
    assert isinstance(record, dict)
    assert record["v"] == "2"


def test_spec_that_disagrees_with_triton_stops_startup(
    tmp_path: Path, redis_server: RedisServer, triton_server: TritonServer
) -> None:
    spec = tmp_path / "models.yaml"
    text = SPEC_PATH.read_text().replace("      - {name: chargebacks_365d", "      #")
    spec.write_text(text)
    gateway = GatewayProcess(
        spec_path=spec, redis_url=redis_server.url, triton_url=triton_server.grpc_url
    )

    with pytest.raises(RuntimeError) as raised:
        gateway.start()

    assert "models.fraud_scorer.features: spec declares 13 features" in str(raised.value)
