"""The floor server of ``benchmarks/floor.py`` answers a hit as the gateway does.

Its figures are only a fair floor if it returns what the gateway returns for the same hit:
the same body fields and values and the same headers (timing headers aside).
"""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from benchmarks.floor import start_floor
from benchmarks.run import stop_process
from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.helpers import TYPICAL, put_cached, put_features

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
TIMING = {"date", "server-timing"}


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

    assert got.status_code == 200
    body, want = got.json(), expected.json()
    assert body.keys() == want.keys()
    same = ("model", "model_version", "entity_id", "scores", "source", "flags")
    assert {k: body[k] for k in same} == {k: want[k] for k in same}
    assert want["source"] == "cache"
    for age in ("prediction_age_s", "feature_age_s"):
        assert 0 <= want[age] - body[age] <= between_s
    assert set(got.headers) - TIMING == set(expected.headers) - TIMING
