"""Overload: a real gateway process with a small in-flight bound (4), real Redis and Triton.

Beyond the bound a request is shed at once (503 + Retry-After on REST, RESOURCE_EXHAUSTED
with ``retry-after-s`` on gRPC) before any work; health endpoints are never shed; nothing
queues without bound, nothing hangs past its deadline, nothing answers 500; every answer is
either a correct prediction or that documented error.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from gateway.client import GatewayCallError, GatewayGrpcClient
from tests.integration.conftest import SPEC_PATH
from tests.integration.held_request import HeldRequest
from tests.integration.helpers import TYPICAL, reference_score
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
BOUND = 4
BODY = {"entity_id": "card-overload", "features": TYPICAL, "cache": "bypass"}
EXPECTED = reference_score(TYPICAL)
DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def bounded(redis_server: RedisServer, triton_server: TritonServer) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        spec_path=SPEC_PATH,
        redis_url=redis_server.url,
        triton_url=triton_server.grpc_url,
        env={"GATEWAY_LIMITS__MAX_IN_FLIGHT": str(BOUND)},
    ) as process:
        yield process


def hold(gateway: GatewayProcess, n: int) -> list[HeldRequest]:
    """n predict requests admitted and waiting for the rest of their bodies."""
    # A client that sends its body slowly gives itself a budget to match.
    headers = {**gateway.headers, "X-Request-Timeout-Ms": "30000"}
    held = [HeldRequest(gateway.port, PREDICT, BODY, headers) for _ in range(n)]
    with httpx.Client(base_url=gateway.url, headers=gateway.headers, timeout=5) as client:
        deadline = time.monotonic() + 5
        # A probe gets through until all n are admitted (then it is shed): no fixed sleep.
        while client.post(PREDICT, json=BODY).status_code != 503:
            assert time.monotonic() < deadline, "held requests were never admitted"
            time.sleep(0.01)
    return held


def assert_correct_or_shed(status: int, headers: Any, body: Any) -> str:
    if status == 200:
        assert body["scores"]["fraud_probability"] == pytest.approx(EXPECTED, abs=1e-6)
        return "ok"
    assert status == 503, (status, body)
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    assert body["type"] == "urn:gateway:error:Overloaded"
    return "shed"


def test_beyond_the_bound_requests_are_shed_at_once_and_health_is_not(
    bounded: GatewayProcess,
) -> None:
    held = hold(bounded, BOUND)
    try:
        latencies_ms = []
        with httpx.Client(base_url=bounded.url, headers=bounded.headers, timeout=5) as client:
            for _ in range(50):
                started = time.perf_counter()
                response = client.post(PREDICT, json=BODY)
                latencies_ms.append((time.perf_counter() - started) * 1000)
                assert (
                    assert_correct_or_shed(response.status_code, response.headers, response.json())
                    == "shed"
                )
            health = client.get("/healthz")
            ready = client.get("/readyz")
            unauthenticated = httpx.post(bounded.url + PREDICT, json=BODY)
        grpc_error = asyncio.run(_grpc_error(bounded))
    finally:
        answers = [h.finish() for h in held]

    assert health.status_code == 200
    assert ready.status_code == 200
    assert unauthenticated.status_code == 503  # shed before the key is even looked at
    assert grpc_error.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_error.error_type == "Overloaded"
    assert grpc_error.retry_after_s == 1
    # The held requests were never disturbed: each completes with the right score.
    assert [assert_correct_or_shed(*a) for a in answers] == ["ok"] * BOUND
    # And with the slots free again the very next request is admitted.
    after = httpx.post(bounded.url + PREDICT, json=BODY, headers=bounded.headers, timeout=5)
    assert assert_correct_or_shed(after.status_code, after.headers, after.json()) == "ok"
    print(
        f"\nshed latency over {len(latencies_ms)} requests (client side, loopback): "
        f"p50 {statistics.median(latencies_ms):.2f} ms, max {max(latencies_ms):.2f} ms"
    )
    assert statistics.median(latencies_ms) < 50


def grpc_shed(error: GatewayCallError) -> str:
    assert error.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert error.retry_after_s == 1
    return "shed"


async def _grpc_error(gateway: GatewayProcess) -> GatewayCallError:
    async with GatewayGrpcClient(gateway.grpc_target, api_key=gateway.api_key) as client:
        with pytest.raises(GatewayCallError) as raised:
            await client.predict("fraud_scorer", "card-overload", features=TYPICAL, cache="bypass")
    return raised.value


async def test_a_burst_far_beyond_the_bound_gets_correct_answers_or_503_never_a_hang(
    bounded: GatewayProcess,
) -> None:
    """64 REST + 32 gRPC requests at once against a bound of 4, twice (cold and warm)."""
    outcomes: dict[str, int] = {"ok": 0, "shed": 0}
    limits = httpx.Limits(max_connections=64)
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(
            base_url=bounded.url, headers=bounded.headers, timeout=DEADLINE_S, limits=limits
        ) as http,
        GatewayGrpcClient(
            bounded.grpc_target, api_key=bounded.api_key, timeout_s=DEADLINE_S
        ) as rpc,
    ):

        async def rest() -> str:
            response = await http.post(PREDICT, json=BODY)
            return assert_correct_or_shed(response.status_code, response.headers, response.json())

        async def call() -> str:
            try:
                result = await rpc.predict(
                    "fraud_scorer", "card-b", features=TYPICAL, cache="bypass"
                )
            except GatewayCallError as e:
                return grpc_shed(e)
            assert result.prediction.scores is not None
            assert result.prediction.scores["fraud_probability"] == pytest.approx(
                EXPECTED, abs=1e-6
            )
            return "ok"

        for _ in range(2):
            for outcome in await asyncio.gather(
                *(rest() for _ in range(64)), *(call() for _ in range(32))
            ):
                outcomes[outcome] += 1
    elapsed_s = time.perf_counter() - started

    print(f"\nburst of 2x96 against a bound of {BOUND}: {outcomes}, {elapsed_s:.2f} s")
    assert outcomes["ok"] >= 1
    assert outcomes["ok"] + outcomes["shed"] == 192
    assert elapsed_s < 2 * DEADLINE_S
