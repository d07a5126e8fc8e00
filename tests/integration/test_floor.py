"""The floor servers of ``benchmarks/floor.py`` answer as the gateway does.

Their figures are only a fair floor if they return what the gateway returns for the same
request: the same body fields and values and the same headers (timing headers aside); the
miss floor also writes the prediction back as the gateway does.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import redis

from benchmarks.floor import start_floor
from benchmarks.run import stop_process
from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.conftest import wait_until
from tests.integration.helpers import TYPICAL, cached, put_cached, put_features
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
TIMING = {"date", "server-timing"}


def same_answer(
    got: httpx.Response, expected: httpx.Response, fields: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor's answer has the gateway's status, body fields and headers (timing aside),
    and the same values in ``fields``; returns both bodies."""
    assert got.status_code == expected.status_code == 200
    body, want = got.json(), expected.json()
    assert body.keys() == want.keys()
    assert {k: body[k] for k in fields} == {k: want[k] for k in fields}
    assert set(got.headers) - TIMING == set(expected.headers) - TIMING
    return body, want


@pytest.mark.parametrize("style", ["tasks", "callbacks", "checked", "uvicorn"])
def test_the_floor_answers_a_hit_as_the_gateway_does(
    style: str,
    client: httpx.Client,
    kv: redis.Redis,
    redis_server: RedisServer,
    gateway: GatewayProcess,
) -> None:
    entity = f"card-floor-{style}"
    features_at = put_features(kv, entity, TYPICAL, written_at=time.time() - 60)
    put_cached(kv, entity, 0.125, time.time() - 30, features_at=features_at)
    procs, url = start_floor(1, redis_server.url, style, gateway.api_key)
    try:
        asked = time.monotonic()
        got = httpx.post(url + PREDICT, json={"entity_id": entity}, headers=gateway.headers)
        expected = client.post(PREDICT, json={"entity_id": entity})
        # Each server reads its clock while answering, somewhere in this span.
        between_s = time.monotonic() - asked + 0.002  # ages are rounded to milliseconds
    finally:
        for proc in procs:
            stop_process(proc)

    body, want = same_answer(
        got, expected, ("model", "model_version", "entity_id", "scores", "source", "flags")
    )
    assert want["source"] == "cache"
    for age in ("prediction_age_s", "feature_age_s"):
        assert 0 <= want[age] - body[age] <= between_s


def test_the_miss_floor_scores_and_writes_back_as_the_gateway_does(
    client: httpx.Client,
    kv: redis.Redis,
    redis_server: RedisServer,
    triton_server: TritonServer,
    gateway: GatewayProcess,
) -> None:
    features_at = time.time() - 60
    for entity in ("card-floor-miss", "card-gateway-miss"):
        put_features(kv, entity, TYPICAL, written_at=features_at)
        kv.delete(f"gw:p:fraud_scorer:1:{entity}")
    procs, url = start_floor(
        1, redis_server.url, "miss", gateway.api_key, triton_url=triton_server.grpc_url
    )
    try:
        got = httpx.post(
            url + PREDICT, json={"entity_id": "card-floor-miss"}, headers=gateway.headers
        )
        expected = client.post(PREDICT, json={"entity_id": "card-gateway-miss"})
        # Both write back after a window of a few milliseconds.
        wait_until(
            lambda: cached(kv, "card-floor-miss") and cached(kv, "card-gateway-miss"),
            timeout_s=2,
        )
    finally:
        for proc in procs:
            stop_process(proc)

    body, want = same_answer(
        got, expected, ("model", "model_version", "scores", "prediction_age_s", "flags")
    )
    assert want["source"] == body["source"] == "model"
    assert abs(body["feature_age_s"] - want["feature_age_s"]) < 1
    written, wanted = cached(kv, "card-floor-miss"), cached(kv, "card-gateway-miss")
    assert written is not None
    assert wanted is not None
    assert written.keys() == wanted.keys()
    assert (written["s"], written["v"], written["f"]) == (wanted["s"], wanted["v"], wanted["f"])
    assert kv.ttl("gw:p:fraud_scorer:1:card-floor-miss") > 3600
