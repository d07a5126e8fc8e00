"""Hybrid serving against the real stack: the ladder, stale-while-revalidate, coalescing,
feature push and freshness, cache statistics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.conftest import MODEL_REPOSITORY, ROOT, SPEC_PATH, wait_until
from tests.integration.delay_proxy import DelayProxy, gateway_behind_proxy
from tests.integration.helpers import (
    TYPICAL,
    cached,
    put_cached,
    put_features,
    reference_score,
    spec_variant,
    triton_counts,
)
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
DEFAULT_SCORE = 0.013  # config/models.yaml fallback.default_scores
DAY = 86400.0


def new_id() -> str:
    return f"card-h{uuid.uuid4().hex[:12]}"


async def burst(gateway: GatewayProcess, body: dict[str, object], n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=10, limits=limits, headers=gateway.headers
    ) as http:
        return list(await asyncio.gather(*(http.post(PREDICT, json=body) for _ in range(n))))


# --- session stack --------------------------------------------------------------------------


def test_headers_name_the_rung_model_version_and_ages(
    client: httpx.Client, kv: redis.Redis
) -> None:
    hit, miss = new_id(), new_id()
    features_at = put_features(kv, hit, TYPICAL, written_at=time.time() - 100)
    put_features(kv, miss, TYPICAL)
    put_cached(kv, hit, 0.25, time.time() - 30, features_at=features_at)

    single = client.post(PREDICT, json={"entity_id": hit})
    batch = client.post(PREDICT, json={"instances": [{"entity_id": hit}, {"entity_id": miss}]})

    assert single.headers["x-prediction-source"] == "cache"
    assert single.headers["x-model-version"] == "1"
    assert 29 <= float(single.headers["x-prediction-age"]) < 40
    assert 99 <= float(single.headers["x-feature-age"]) < 110
    assert single.json()["flags"] == []
    assert batch.headers["x-prediction-source"] == "cache,model"
    assert float(batch.headers["x-prediction-age"]) >= 29  # the oldest in the batch
    assert [p["source"] for p in batch.json()["predictions"]] == ["cache", "model"]


def test_stale_while_revalidate_serves_stale_and_refreshes_exactly_once(
    gateway: GatewayProcess, triton_server: TritonServer, kv: redis.Redis
) -> None:
    entity = new_id()
    features_at = put_features(kv, entity, TYPICAL, written_at=time.time() - 7200)
    stale_at = time.time() - 3700  # past max_age_s 3600, inside the 300 s revalidate window
    put_cached(kv, entity, 0.5, stale_at, features_at=features_at)
    before, _ = triton_counts(triton_server.http_url)

    responses = asyncio.run(burst(gateway, {"entity_id": entity}, 40))

    expected = pytest.approx(reference_score(TYPICAL), abs=1e-6)
    kinds = set()
    for response in responses:
        body = response.json()
        kind = (body["source"], body["flags"])
        kinds.add(str(kind))
        # Stale while the one refresh runs; on a slow box late requests may already see it.
        if kind == ("stale", ["revalidating"]):
            assert body["scores"]["fraud_probability"] == 0.5
            assert body["prediction_age_s"] >= 3700
        else:
            assert kind == ("cache", [])
            assert body["scores"]["fraud_probability"] == expected
    assert "('stale', ['revalidating'])" in kinds
    refreshed = wait_until(lambda: (r := cached(kv, entity)) and r["t"] > stale_at and r)
    assert isinstance(refreshed, dict)
    assert refreshed["s"] == [pytest.approx(reference_score(TYPICAL), abs=1e-6)]
    time.sleep(0.3)  # a second refresh, if any, would have reached Triton by now
    after, _ = triton_counts(triton_server.http_url)
    assert after - before == 1, "40 requests saw the stale entry: one refresh, not many"
    again = httpx.post(
        f"{gateway.url}{PREDICT}", json={"entity_id": entity}, headers=gateway.headers
    ).json()
    assert again["source"] == "cache"


def test_feature_push_invalidates_the_cached_prediction(
    client: httpx.Client, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL, written_at=time.time() - 60)
    first = client.post(PREDICT, json={"entity_id": entity}).json()
    wait_until(lambda: cached(kv, entity))
    risky = {"amount": 4800.0, "is_online": True, "hour_of_day": 3}

    pushed = client.put(f"/v1/features/card/{entity}", json={"features": risky})

    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["applied"] is True
    assert cached(kv, entity) is None, "the push deletes the cached prediction"
    body = client.post(PREDICT, json={"entity_id": entity}).json()
    assert body["source"] == "model"
    expected = reference_score({**TYPICAL, **risky, "is_online": 1})
    assert body["scores"]["fraud_probability"] == pytest.approx(expected, abs=1e-6)
    assert body["scores"] != first["scores"]
    assert body["feature_age_s"] < 5


def test_older_event_never_rolls_features_back(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    now = time.time()
    newer = client.put(
        f"/v1/features/card/{entity}", json={"features": {"amount": 10.0}, "event_time": now}
    )
    late = client.put(
        f"/v1/features/card/{entity}",
        json={"features": {"amount": 999.0}, "event_time": now - 60},
    )

    assert newer.json()["applied"] is True
    assert late.status_code == 200
    assert late.json()["applied"] is False
    assert kv.hget(f"gw:f:card:{entity}", "amount") == b"10"
    assert float(kv.hget(f"gw:f:card:{entity}", "_ts") or 0) == pytest.approx(now)


def test_bulk_push_validates_everything_before_writing(
    client: httpx.Client, kv: redis.Redis
) -> None:
    a, b = new_id(), new_id()
    good = {"entity_id": a, "features": {"amount": 12.5}, "event_time": "2026-01-01T00:00:00Z"}
    bad = {"entity_id": b, "features": {"amount": -1}}

    rejected = client.post("/v1/features/card", json={"updates": [good, bad]})
    accepted = client.post(
        "/v1/features/card",
        json={"updates": [good, {"entity_id": b, "features": {"txn_count_1h": 3}}]},
    )

    assert rejected.status_code == 422
    assert rejected.json()["field"] == "updates[1].features.amount"
    assert accepted.json() == {"namespace": "card", "applied": 2, "skipped_older": 0}
    assert kv.hget(f"gw:f:card:{a}", "_ts") == repr(1767225600.0).encode()
    assert kv.hget(f"gw:f:card:{b}", "txn_count_1h") == b"3"


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/features/nope/x", {"features": {"amount": 1}}, 404, None),
        ("/v1/features/card/x", {"features": {"bogus": 1}}, 422, "features.bogus"),
        ("/v1/features/card/x", {"features": {}}, 422, "features"),
        ("/v1/features/card/x", {"features": {"amount": 1}, "event_time": 4e9}, 422, "event_time"),
        ("/v1/features/card/x", {"features": {"amount": 1}, "event_time": "yesterday"}, 422, None),
        ("/v1/features/card/x", {"features": {"amount": 1}, "entity_id": "y"}, 422, "entity_id"),
    ],
)
def test_feature_push_errors(
    client: httpx.Client,
    kv: redis.Redis,
    path: str,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    response = client.put(path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field is not None:
        assert response.json()["field"] == field
    assert kv.exists("gw:f:card:x") == 0


def test_old_features_are_flagged(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL, written_at=time.time() - 8 * DAY)  # limit: 7 days

    body = client.post(PREDICT, json={"entity_id": entity}).json()

    assert body["source"] == "model"
    assert body["flags"] == ["old_features"]
    assert body["feature_age_s"] == pytest.approx(8 * DAY, abs=5)


def test_cache_stats_cli_counts_keys_per_version_and_age(
    redis_server: RedisServer, kv: redis.Redis
) -> None:
    now = time.time()
    model = f"stats_{uuid.uuid4().hex[:6]}"
    for i, age in enumerate([10, 20, 4000, 90000]):
        body = {"s": [0.1], "v": "1", "t": now - age, "f": None}
        kv.set(f"gw:p:{model}:1:e{i}", orjson.dumps(body))
    kv.set(f"gw:p:{model}:2:e0", orjson.dumps({"s": [0.1], "v": "2", "t": now, "f": None}))

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "cache-stats", "--model", model, "--json"],
        cwd=ROOT,
        env={"GATEWAY_REDIS__URL": redis_server.url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    stats = {(s["model"], s["version"]): s for s in orjson.loads(result.stdout)}
    assert stats[(model, "1")]["keys"] == 4
    assert stats[(model, "1")]["age_histogram"] == {
        "<1m": 2,
        "<5m": 0,
        "<1h": 0,
        "<6h": 1,
        "<24h": 0,
        ">=24h": 1,
    }
    assert stats[(model, "2")]["keys"] == 1


# --- dedicated stacks -----------------------------------------------------------------------


@pytest.fixture
def slow_gateway(
    redis_server: RedisServer, triton_server: TritonServer
) -> Iterator[tuple[GatewayProcess, DelayProxy]]:
    """A gateway whose Triton answers arrive 300 ms late (a delaying TCP proxy)."""
    env = {"GATEWAY_TRITON__TIMEOUT_S": "5"}
    with gateway_behind_proxy(SPEC_PATH, redis_server.url, triton_server.grpc_url, env) as (
        gateway,
        proxy,
    ):
        proxy.delay_s = 0.3
        yield gateway, proxy


def test_concurrent_identical_misses_make_one_triton_call(
    slow_gateway: tuple[GatewayProcess, DelayProxy],
    triton_server: TritonServer,
    kv: redis.Redis,
) -> None:
    gateway, _ = slow_gateway
    entity = new_id()
    put_features(kv, entity, TYPICAL)
    before, _ = triton_counts(triton_server.http_url)

    responses = asyncio.run(burst(gateway, {"entity_id": entity, "cache": "bypass"}, 30))

    after, _ = triton_counts(triton_server.http_url)
    assert [r.status_code for r in responses] == [200] * 30
    scores = {r.json()["scores"]["fraud_probability"] for r in responses}
    assert len(scores) == 1
    assert scores.pop() == pytest.approx(reference_score(TYPICAL), abs=1e-6)
    assert after - before == 1, f"30 identical misses made {after - before} Triton inferences"


@pytest.fixture
def own_triton() -> Iterator[TritonServer]:
    with TritonServer(MODEL_REPOSITORY) as server:
        yield server


def test_ladder_when_triton_is_down(
    redis_server: RedisServer, kv: redis.Redis, own_triton: TritonServer, tmp_path: Path
) -> None:
    fresh, stale, too_old, bare = new_id(), new_id(), new_id(), new_id()
    now = time.time()
    for entity in (fresh, stale, too_old, bare):
        put_features(kv, entity, TYPICAL, written_at=now - DAY)
    put_cached(kv, fresh, 0.11, now - 60, features_at=now - DAY)
    put_cached(kv, stale, 0.22, now - 2 * 3600, features_at=now - DAY)  # < max_staleness 6 h
    put_cached(kv, too_old, 0.33, now - 7 * 3600, features_at=now - DAY)
    no_default = spec_variant(
        tmp_path, fallback={"default_scores": None, "without_feature_store": "fail"}
    )
    with (
        GatewayProcess(
            spec_path=SPEC_PATH, redis_url=redis_server.url, triton_url=own_triton.grpc_url
        ) as gateway,
        GatewayProcess(
            spec_path=no_default, redis_url=redis_server.url, triton_url=own_triton.grpc_url
        ) as strict,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as client,
    ):
        own_triton.stop()
        answers = {
            e: client.post(PREDICT, json={"entity_id": e}) for e in (fresh, stale, too_old, bare)
        }
        batch = client.post(
            PREDICT, json={"instances": [{"entity_id": e} for e in (fresh, stale, bare)]}
        )
        overrides = client.post(PREDICT, json={"entity_id": stale, "features": {"amount": 5.0}})
        strict_stale = httpx.post(
            f"{strict.url}{PREDICT}", json={"entity_id": stale}, headers=strict.headers
        )
        strict_bare = httpx.post(
            f"{strict.url}{PREDICT}", json={"entity_id": bare}, headers=strict.headers
        )

    def rung(response: httpx.Response) -> tuple[str, list[str], float]:
        body = response.json()
        return body["source"], body["flags"], body["scores"]["fraud_probability"]

    assert rung(answers[fresh]) == ("cache", [], 0.11)
    assert rung(answers[stale]) == ("stale", ["fallback"], 0.22)
    assert answers[stale].headers["x-prediction-source"] == "stale"
    assert answers[stale].json()["prediction_age_s"] == pytest.approx(7200, abs=60)
    assert rung(answers[too_old]) == ("default", ["fallback"], DEFAULT_SCORE)
    assert rung(answers[bare]) == ("default", ["fallback"], DEFAULT_SCORE)
    assert answers[bare].json()["prediction_age_s"] is None
    assert batch.status_code == 200
    assert batch.headers["x-prediction-source"] == "cache,default,stale"
    assert [p["source"] for p in batch.json()["predictions"]] == ["cache", "stale", "default"]
    # A what-if request is never answered with the entity's cached score.
    assert rung(overrides) == ("default", ["fallback"], DEFAULT_SCORE)
    # Without declared default scores the ladder ends in 503, after the stale rung.
    assert rung(strict_stale) == ("stale", ["fallback"], 0.22)
    assert strict_bare.status_code == 503
    assert strict_bare.headers["retry-after"] == "1"


def test_feature_store_down_policies(triton_server: TritonServer, tmp_path: Path) -> None:
    degrade = spec_variant(
        tmp_path,
        fallback={
            "default_scores": {"fraud_probability": DEFAULT_SCORE},
            "without_feature_store": "defaults",
        },
        feature_freshness={"max_age_s": 3600, "on_violation": "reject"},
    )
    with (
        RedisServer() as own_redis,
        DelayProxy(triton_server.grpc_url) as triton_proxy,
        GatewayProcess(
            spec_path=degrade, redis_url=own_redis.url, triton_url=triton_proxy.address
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as client,
    ):
        kv = redis.Redis.from_url(own_redis.url)
        old = new_id()
        put_features(kv, old, TYPICAL, written_at=time.time() - 7200)
        rejected = client.post(PREDICT, json={"entity_id": old})
        kv.close()

        own_redis.stop()
        with_amount = client.post(PREDICT, json={"entity_id": new_id(), "features": TYPICAL})
        without_amount = client.post(PREDICT, json={"entity_id": new_id()})
        # Both dependencies out: Triton holds its answers past the request's deadline.
        triton_proxy.delay_s = 5.0
        both_down = client.post(
            PREDICT,
            json={"entity_id": new_id(), "features": TYPICAL},
            headers={"X-Request-Timeout-Ms": "300"},
        )

    assert rejected.status_code == 422
    assert rejected.json()["title"] == "Features too old"
    assert with_amount.status_code == 200
    body = with_amount.json()
    assert (body["source"], body["flags"]) == ("model", ["no_feature_store"])
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(TYPICAL), abs=1e-6)
    # amount has no default: without the store there is nothing honest to score with.
    assert without_amount.status_code == 503
    assert without_amount.json()["title"] == "Feature store unavailable"
    # The default answer still says it was built without the feature store.
    assert both_down.status_code == 200, both_down.text
    down = both_down.json()
    assert (down["source"], down["flags"]) == ("default", ["no_feature_store", "fallback"])
    assert both_down.headers["x-prediction-source"] == "default"
