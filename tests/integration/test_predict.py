"""The online path against real Redis and Triton: cache-first with real-time fallback."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.conftest import SPEC_PATH, wait_until
from tests.integration.delay_proxy import DelayProxy, gateway_behind_proxy
from tests.integration.helpers import (
    TYPICAL,
    cached,
    put_cached,
    put_features,
    reference_score,
    triton_counts,
    with_defaults,
)
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"


def new_id() -> str:
    return f"card-t{uuid.uuid4().hex[:12]}"


def test_miss_calls_triton_and_writes_back(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    features_at = put_features(kv, entity, TYPICAL)

    response = client.post(PREDICT, json={"entity_id": entity})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "model"
    assert body["model"] == "fraud_scorer"
    assert body["model_version"] == "1"
    assert body["entity_id"] == entity
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(TYPICAL), abs=1e-6)
    assert body["prediction_age_s"] == 0.0
    assert body["feature_age_s"] >= 0
    assert response.headers["x-request-id"] == body["request_id"]
    record = wait_until(lambda: cached(kv, entity))
    assert isinstance(record, dict)
    assert record["v"] == "1"
    assert record["f"] == pytest.approx(features_at)
    assert record["s"] == [pytest.approx(body["scores"]["fraud_probability"])]
    assert 0 < kv.ttl(f"gw:p:fraud_scorer:1:{entity}") <= 86400


def test_serves_cache_when_fresh_without_calling_triton(
    client: httpx.Client, kv: redis.Redis, triton_server: TritonServer
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)
    first = client.post(PREDICT, json={"entity_id": entity}).json()
    wait_until(lambda: cached(kv, entity))
    before = triton_counts(triton_server.http_url)

    second = client.post(PREDICT, json={"entity_id": entity}).json()

    assert second["source"] == "cache"
    assert second["scores"] == first["scores"]
    assert 0 <= second["prediction_age_s"] < 60
    assert triton_counts(triton_server.http_url) == before


def test_stale_entry_is_recomputed_and_refreshed(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    features_at = put_features(kv, entity, TYPICAL, written_at=time.time() - 7200)
    stale_at = time.time() - 4000  # past max_age_s (3600) + stale_while_revalidate_s (300)
    put_cached(kv, entity, 0.5, stale_at, features_at=features_at)

    body = client.post(PREDICT, json={"entity_id": entity}).json()

    assert body["source"] == "model"
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(TYPICAL), abs=1e-6)
    refreshed = wait_until(lambda: (r := cached(kv, entity)) and r["t"] > stale_at and r)
    assert isinstance(refreshed, dict)
    assert refreshed["s"] == [pytest.approx(body["scores"]["fraud_probability"])]


def test_newer_features_invalidate_cached_prediction(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    old = put_features(kv, entity, TYPICAL, written_at=time.time() - 60)
    put_cached(kv, entity, 0.5, time.time() - 30, features_at=old)
    assert client.post(PREDICT, json={"entity_id": entity}).json()["source"] == "cache"

    risky = {**TYPICAL, "amount": 4800.0, "is_online": 1, "hour_of_day": 3}
    put_features(kv, entity, risky)
    body = client.post(PREDICT, json={"entity_id": entity}).json()

    assert body["source"] == "model"
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(risky), abs=1e-6)


def test_request_features_override_stored_and_skip_the_cache(
    client: httpx.Client, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)
    put_cached(kv, entity, 0.5, time.time())
    overrides = {"amount": 2500.0, "foreign_transaction": True, "card_present": False}

    body = client.post(PREDICT, json={"entity_id": entity, "features": overrides}).json()

    expected = reference_score({**TYPICAL, **overrides})
    assert body["source"] == "model"
    assert body["scores"]["fraud_probability"] == pytest.approx(expected, abs=1e-6)
    time.sleep(0.2)
    record = cached(kv, entity)
    assert record is not None
    assert record["s"] == [0.5], "an override result must not be cached"


def test_declared_defaults_fill_features_nobody_supplied(
    client: httpx.Client, kv: redis.Redis
) -> None:
    entity = new_id()  # nothing stored for it

    body = client.post(PREDICT, json={"entity_id": entity, "features": {"amount": 99.0}}).json()

    assert body["source"] == "model"
    assert body["feature_age_s"] is None
    expected = reference_score(with_defaults({"amount": 99.0}))
    assert body["scores"]["fraud_probability"] == pytest.approx(expected, abs=1e-6)


def test_partially_stored_features_combine_with_defaults(
    client: httpx.Client, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, {"amount": 310.0, "txn_count_1h": 7})

    body = client.post(PREDICT, json={"entity_id": entity}).json()

    expected = reference_score(with_defaults({"amount": 310.0, "txn_count_1h": 7}))
    assert body["scores"]["fraud_probability"] == pytest.approx(expected, abs=1e-6)


def test_required_feature_without_any_value_is_422(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()

    response = client.post(PREDICT, json={"entity_id": entity})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "features.amount"
    assert cached(kv, entity) is None


def test_cache_bypass_recomputes_even_when_fresh(client: httpx.Client, kv: redis.Redis) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)
    put_cached(kv, entity, 0.5, time.time())

    body = client.post(PREDICT, json={"entity_id": entity, "cache": "bypass"}).json()

    assert body["source"] == "model"
    assert body["scores"]["fraud_probability"] != 0.5
    wait_until(lambda: (r := cached(kv, entity)) and r["s"] != [0.5])


def test_cache_only_answers_404_without_a_fresh_entry(
    client: httpx.Client, kv: redis.Redis
) -> None:
    entity = new_id()
    features_at = put_features(kv, entity, TYPICAL)

    response = client.post(PREDICT, json={"entity_id": entity, "cache": "only"})

    assert response.status_code == 404
    assert response.json()["title"] == "No cached prediction"
    put_cached(kv, entity, 0.25, time.time(), features_at=features_at)
    hit = client.post(PREDICT, json={"entity_id": entity, "cache": "only"}).json()
    assert hit["source"] == "cache"
    assert hit["scores"]["fraud_probability"] == 0.25


def test_batch_mixes_hits_and_misses_in_request_order(
    client: httpx.Client, kv: redis.Redis
) -> None:
    hit, miss, override = new_id(), new_id(), new_id()
    written = {entity: put_features(kv, entity, TYPICAL) for entity in (hit, miss, override)}
    put_cached(kv, hit, 0.125, time.time(), features_at=written[hit])
    instances = [
        {"entity_id": miss},
        {"entity_id": hit},
        {"entity_id": override, "features": {"amount": 1500.0}},
    ]

    response = client.post(PREDICT, json={"instances": instances})

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["entity_id"] for p in predictions] == [miss, hit, override]
    assert [p["source"] for p in predictions] == ["model", "cache", "model"]
    assert predictions[1]["scores"]["fraud_probability"] == 0.125
    assert predictions[0]["scores"]["fraud_probability"] == pytest.approx(
        reference_score(TYPICAL), abs=1e-6
    )
    assert predictions[2]["scores"]["fraud_probability"] == pytest.approx(
        reference_score({**TYPICAL, "amount": 1500.0}), abs=1e-6
    )


def test_batch_cache_only_marks_entries_without_prediction(
    client: httpx.Client, kv: redis.Redis
) -> None:
    hit, miss = new_id(), new_id()
    put_cached(kv, hit, 0.75, time.time())

    body = client.post(
        PREDICT,
        json={"instances": [{"entity_id": hit}, {"entity_id": miss}], "cache": "only"},
    ).json()

    assert [p["source"] for p in body["predictions"]] == ["cache", "none"]
    assert body["predictions"][1]["scores"] is None


async def test_concurrent_single_row_misses_are_batched_by_triton(
    gateway: GatewayProcess, kv: redis.Redis, triton_server: TritonServer
) -> None:
    entities = [new_id() for _ in range(200)]
    for entity in entities:
        put_features(kv, entity, TYPICAL)
    before_inferences, before_executions = triton_counts(triton_server.http_url)

    url = f"{gateway.url}{PREDICT}"
    limits = httpx.Limits(max_connections=200)
    # A generous deadline: this burst is about batching, not about the 1 s default budget on
    # a shared 2-core box (test_faults covers deadlines).
    headers = {**gateway.headers, "X-Request-Timeout-Ms": "20000"}
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as http:
        responses = await asyncio.gather(
            *(http.post(url, json={"entity_id": e, "cache": "bypass"}) for e in entities)
        )

    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert not failures, failures[:3]
    inferences, executions = triton_counts(triton_server.http_url)
    assert inferences - before_inferences == 200
    assert executions - before_executions < 200, "dynamic batching merged no requests"


async def paced_misses(gateway: GatewayProcess, entities: list[str], gap_s: float) -> list[float]:
    """Send one miss per entity, a new one every ``gap_s`` (open loop); their scores."""
    url = f"{gateway.url}{PREDICT}"
    headers = {**gateway.headers, "X-Request-Timeout-Ms": "20000"}
    limits = httpx.Limits(max_connections=len(entities))
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as http:
        sent = []
        for entity in entities:
            body = {"entity_id": entity, "cache": "bypass"}
            sent.append(asyncio.ensure_future(http.post(url, json=body)))
            await asyncio.sleep(gap_s)
        responses = await asyncio.gather(*sent)
    failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert not failures, failures[:3]
    assert {r.json()["source"] for r in responses} == {"model"}
    return [r.json()["scores"]["fraud_probability"] for r in responses]


async def test_misses_that_come_while_a_call_is_out_share_the_next_one(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis
) -> None:
    """Misses 1 ms apart rarely become ready in the same iteration. Triton's answers come
    20 ms late here (a delaying proxy): with a window the misses that come while the model's
    call is out wait for it and share the next call, and Triton executes far fewer batches."""
    executions: dict[int, int] = {}
    for window_ms in (0, 50):
        entities = [new_id() for _ in range(400)]
        for entity in entities:
            put_features(kv, entity, TYPICAL)
        env = {"GATEWAY_INFER_WINDOW_MS": str(window_ms)}
        with gateway_behind_proxy(SPEC_PATH, redis_server.url, triton_server.grpc_url, env) as (
            gateway,
            proxy,
        ):
            proxy.delay_s = 0.02
            inferences_before, executions_before = triton_counts(triton_server.http_url)
            scores = await paced_misses(gateway, entities, 0.001)
            inferences, executions[window_ms] = triton_counts(triton_server.http_url)
        assert scores == pytest.approx([reference_score(TYPICAL)] * len(entities), abs=1e-6)
        assert inferences - inferences_before == len(entities)
        executions[window_ms] -= executions_before
    # A call is out for 20 ms and more, so ~20 misses gather behind each one.
    assert executions[50] <= 400 // 5, executions
    assert executions[50] * 4 < executions[0], executions


async def test_a_held_miss_goes_when_the_call_it_waited_for_ends_not_at_the_window_end(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis
) -> None:
    """Triton's answers come 30 ms late and the window is 100 ms: ten misses that come while
    the first one's call is out go when it ends (answered ~60 ms after the first was sent),
    not when the window ends (over 130 ms)."""
    first, held = new_id(), [new_id() for _ in range(10)]
    for entity in [first, *held]:
        put_features(kv, entity, TYPICAL)
    env = {"GATEWAY_INFER_WINDOW_MS": "100"}
    with gateway_behind_proxy(SPEC_PATH, redis_server.url, triton_server.grpc_url, env) as (
        gateway,
        proxy,
    ):
        headers = {**gateway.headers, "X-Request-Timeout-Ms": "20000"}
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(
            base_url=gateway.url, limits=limits, timeout=30, headers=headers
        ) as http:
            # Warm connections, so that the timed misses pay no connection set-up.
            await asyncio.gather(*(http.get("/livez") for _ in range(11)))
            proxy.delay_s = 0.03
            _, executions_before = triton_counts(triton_server.http_url)
            loop = asyncio.get_running_loop()
            start = loop.time()
            body = {"entity_id": first, "cache": "bypass"}
            sent = [asyncio.ensure_future(http.post(PREDICT, json=body))]
            for entity in held:
                await asyncio.sleep(0.002)
                body = {"entity_id": entity, "cache": "bypass"}
                sent.append(asyncio.ensure_future(http.post(PREDICT, json=body)))
            answers = await asyncio.gather(*sent)
            elapsed = loop.time() - start
            _, executions_after = triton_counts(triton_server.http_url)
    assert [a.status_code for a in answers] == [200] * 11, [a.text for a in answers]
    assert {a.json()["source"] for a in answers} == {"model"}
    assert executions_after - executions_before == 2
    assert elapsed < 0.12, elapsed


def test_a_stalled_feature_lookup_is_a_504_at_the_deadline_and_the_next_one_is_served(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis
) -> None:
    """Redis answers 2 s late: the request gets its 504 at its own 300 ms deadline (the lookup
    it gave up is dropped, not left to confuse the connection), and once Redis is prompt
    again a request is scored as usual."""
    stalled, later = new_id(), new_id()
    for entity in (stalled, later):
        put_features(kv, entity, TYPICAL)
    with (
        DelayProxy(f"127.0.0.1:{redis_server.port}") as proxy,
        GatewayProcess(
            spec_path=SPEC_PATH,
            redis_url=f"redis://{proxy.address}/0",
            triton_url=triton_server.grpc_url,
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, headers=gateway.headers) as http,
    ):
        proxy.delay_s = 2.0
        start = time.monotonic()
        late = http.post(
            PREDICT, json={"entity_id": stalled}, headers={"X-Request-Timeout-Ms": "300"}
        )
        elapsed = time.monotonic() - start
        proxy.delay_s = 0.0
        time.sleep(2.5)  # the held reply arrives and is read and dropped
        served = http.post(PREDICT, json={"entity_id": later})
    assert late.status_code == 504, late.text
    assert late.json()["title"] == "Deadline exceeded"
    assert 0.25 < elapsed < 1.5, elapsed
    assert served.status_code == 200, served.text
    body = served.json()
    assert body["entity_id"] == later
    assert body["scores"]["fraud_probability"] == pytest.approx(reference_score(TYPICAL), abs=1e-6)
