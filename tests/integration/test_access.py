"""Access control against a real gateway process: API keys, allow-lists, rotation, rate limits.

One module gateway with a keys file of three clients (every model; one model it does not
serve; a rate-limited one), re-read every 0.2 s so rotation is observable in the test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from gateway.client import GatewayCallError, GatewayGrpcClient
from gateway.keys import KeyEntry, load_keys_file, mint, write_keys_file
from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc
from tests.integration.conftest import SPEC_PATH, wait_until
from tests.integration.helpers import TYPICAL, reference_score
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
BODY = {"entity_id": "card-access", "features": TYPICAL, "cache": "bypass"}
EXPECTED = reference_score(TYPICAL)


@dataclass
class Keys:
    path: Path
    full: str
    narrow: str
    """May use only a model this gateway does not serve."""
    metered: str
    """0.1 requests/s, burst 3: the fourth request within 10 s is refused."""
    entries: list[KeyEntry]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    path = tmp_path_factory.mktemp("auth") / "keys.yaml"
    full, full_entry = mint("full", ["*"])
    narrow, narrow_entry = mint("narrow", ["credit_limit"])
    metered_client = f"metered-{uuid.uuid4().hex[:8]}"  # its own bucket in the shared Redis
    metered, metered_entry = mint(metered_client, ["fraud_scorer"], rate_per_s=0.1, burst=3)
    entries = [full_entry, narrow_entry, metered_entry]
    write_keys_file(path, entries)
    return Keys(path, full, narrow, metered, entries)


def start(redis_server: RedisServer, triton_server: TritonServer, keys: Keys) -> GatewayProcess:
    return GatewayProcess(
        spec_path=SPEC_PATH,
        redis_url=redis_server.url,
        triton_url=triton_server.grpc_url,
        keys_file=keys.path,
        api_key=keys.full,
        env={"GATEWAY_AUTH__RELOAD_INTERVAL_S": "0.2"},
    )


@pytest.fixture(scope="module")
def guarded(
    redis_server: RedisServer, triton_server: TritonServer, keys: Keys
) -> Iterator[GatewayProcess]:
    with start(redis_server, triton_server, keys) as process:
        yield process


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_problem(response: httpx.Response, status: int, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:gateway:error:{error_type}"
    return body


# --- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", PREDICT),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/fraud_scorer"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/no/such/route"),  # unknown routes do not reveal themselves either
    ],
)
def test_every_api_route_needs_a_key(guarded: GatewayProcess, method: str, path: str) -> None:
    response = httpx.request(method, guarded.url + path, json=BODY if method == "POST" else None)

    body = assert_problem(response, 401, "Unauthenticated")
    assert "Authorization: Bearer" in body["detail"]
    assert response.headers["www-authenticate"] == 'Bearer realm="gateway"'


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_and_metrics_need_no_key(guarded: GatewayProcess, path: str) -> None:
    response = httpx.get(guarded.url + path)
    assert response.status_code != 401
    if path != "/metrics":  # served once telemetry lands; never behind a key
        assert response.status_code == 200


def test_invalid_keys_all_get_the_same_answer(guarded: GatewayProcess, keys: Keys) -> None:
    unknown, _ = mint("full", ["*"])
    wrong_secret = keys.full[:-6] + ("A" * 6 if not keys.full.endswith("A" * 6) else "B" * 6)
    bodies = set()
    for presented in (unknown, wrong_secret, "hunter2", keys.full + " "):
        response = httpx.post(guarded.url + PREDICT, json=BODY, headers=bearer(presented + "x"))
        bodies.add(response.content)
        assert presented.strip() not in response.text
    assert len(bodies) == 1


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_a_valid_key_in_either_header_is_served(
    guarded: GatewayProcess, keys: Keys, header: str
) -> None:
    value = f"Bearer {keys.full}" if header == "authorization" else keys.full
    response = httpx.post(guarded.url + PREDICT, json=BODY, headers={header: value})

    assert response.status_code == 200, response.text
    assert response.json()["scores"]["fraud_probability"] == pytest.approx(EXPECTED, abs=1e-6)


# --- per-key model allow-list --------------------------------------------------------------


def test_a_model_outside_the_allow_list_is_403_and_not_listed(
    guarded: GatewayProcess, keys: Keys
) -> None:
    with httpx.Client(base_url=guarded.url, headers=bearer(keys.narrow), timeout=5) as client:
        predict = client.post(PREDICT, json=BODY)
        info = client.get("/v1/models/fraud_scorer")
        listed = client.get("/v1/models")
    with httpx.Client(base_url=guarded.url, headers=bearer(keys.full), timeout=5) as client:
        listed_for_full = client.get("/v1/models")

    body = assert_problem(predict, 403, "PermissionDenied")
    assert body["field"] == "model"
    assert "fraud_scorer" in body["detail"]
    assert_problem(info, 403, "PermissionDenied")
    assert listed.json() == {"models": []}
    assert [m["name"] for m in listed_for_full.json()["models"]] == ["fraud_scorer"]


def test_feature_writes_need_every_reading_model_on_the_allow_list(
    guarded: GatewayProcess, keys: Keys
) -> None:
    path = "/v1/features/card/card-access-push"
    body = {"features": TYPICAL}
    with httpx.Client(base_url=guarded.url, timeout=5) as client:
        one = client.put(path, json=body, headers=bearer(keys.narrow))
        many = client.post(
            "/v1/features/card",
            json={"updates": [{"entity_id": "card-access-push", "features": TYPICAL}]},
            headers=bearer(keys.narrow),
        )
        allowed = client.put(path, json=body, headers=bearer(keys.full))

    for refused in (one, many):
        problem = assert_problem(refused, 403, "PermissionDenied")
        assert problem["field"] == "namespace"
        assert "fraud_scorer" in problem["detail"]
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["applied"] is True


async def test_grpc_maps_missing_keys_and_allow_lists_like_rest(
    guarded: GatewayProcess, keys: Keys
) -> None:
    async def error(api_key: str | None) -> GatewayCallError:
        async with GatewayGrpcClient(guarded.grpc_target, api_key=api_key) as client:
            with pytest.raises(GatewayCallError) as raised:
                await client.predict("fraud_scorer", "card-access", features=TYPICAL)
        return raised.value

    missing, invalid, denied = await asyncio.gather(
        error(None), error("gw_x_y"), error(keys.narrow)
    )
    async with GatewayGrpcClient(guarded.grpc_target, api_key=keys.full) as client:
        result = await client.predict("fraud_scorer", "card-access", features=TYPICAL)

    assert (missing.grpc_code, missing.error_type) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "Unauthenticated",
    )
    assert invalid.grpc_code == grpc.StatusCode.UNAUTHENTICATED
    assert (denied.grpc_code, denied.field) == (grpc.StatusCode.PERMISSION_DENIED, "model")
    assert result.prediction.scores == {"fraud_probability": pytest.approx(EXPECTED, abs=1e-6)}


def test_grpc_x_api_key_metadata_works_and_health_needs_no_key(
    guarded: GatewayProcess, keys: Keys
) -> None:
    with grpc.insecure_channel(guarded.grpc_target) as channel:
        stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
        listed = stub.ListModels(
            pb.ListModelsRequest(), metadata=(("x-api-key", keys.narrow),), timeout=5
        )
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )

    assert list(listed.models) == []  # the narrow key sees no served model
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# --- rotation without restart ----------------------------------------------------------------


def test_keys_rotate_without_a_restart(guarded: GatewayProcess, keys: Keys) -> None:
    new_key, new_entry = mint("full", ["*"])

    def status(key: str) -> int:
        return httpx.post(guarded.url + PREDICT, json=BODY, headers=bearer(key)).status_code

    assert status(new_key) == 401
    # 1. add the new key next to the old one
    write_keys_file(keys.path, [*keys.entries, new_entry])
    wait_until(lambda: status(new_key) == 200, timeout_s=5)
    assert status(keys.full) == 200  # both work while clients roll over
    # 2. remove the old key
    old_full = keys.entries[0]
    write_keys_file(keys.path, [new_entry, *keys.entries[1:]])
    wait_until(lambda: status(keys.full) == 401, timeout_s=5)
    assert status(new_key) == 200
    assert status(keys.narrow) == 403  # the other clients were never disturbed

    write_keys_file(keys.path, keys.entries)  # restore for the other tests
    wait_until(lambda: status(keys.full) == 200, timeout_s=5)
    assert load_keys_file(keys.path)[0] == old_full


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_and_shared_by_replicas(
    guarded: GatewayProcess,
    keys: Keys,
    redis_server: RedisServer,
    triton_server: TritonServer,
) -> None:
    with start(redis_server, triton_server, keys) as replica:
        with httpx.Client(headers=bearer(keys.metered), timeout=5) as client:
            allowed = [client.post(guarded.url + PREDICT, json=BODY) for _ in range(3)]
            refused = client.post(guarded.url + PREDICT, json=BODY)
            refused_by_replica = client.post(replica.url + PREDICT, json=BODY)
        grpc_refusal = asyncio.run(_grpc_rate_limited(replica, keys.metered))
        other_client = httpx.post(guarded.url + PREDICT, json=BODY, headers=bearer(keys.full))

    assert [r.status_code for r in allowed] == [200, 200, 200]
    for response in (refused, refused_by_replica):
        body = assert_problem(response, 429, "RateLimited")
        assert "0.1 requests/s" in body["detail"]
        assert 1 <= int(response.headers["retry-after"]) <= 10
    assert grpc_refusal.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_refusal.error_type == "RateLimited"
    assert grpc_refusal.retry_after_s is not None
    assert 1 <= grpc_refusal.retry_after_s <= 10
    assert other_client.status_code == 200  # buckets are per client


async def _grpc_rate_limited(gateway: GatewayProcess, api_key: str) -> GatewayCallError:
    async with GatewayGrpcClient(gateway.grpc_target, api_key=api_key) as client:
        with pytest.raises(GatewayCallError) as raised:
            await client.predict("fraud_scorer", "card-access", features=TYPICAL)
    return raised.value


# --- size limits and what error bodies never contain -----------------------------------------


def test_grpc_messages_over_the_limit_are_refused_by_the_transport(
    guarded: GatewayProcess, keys: Keys
) -> None:
    features = {f"f{i:07d}" + "x" * 40: 1.0 for i in range(100_000)}  # ~6 MB > 4 MiB
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(guarded.grpc_target, options=options) as channel:
        stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(
                pb.PredictRequest(model="fraud_scorer", entity_id="c", features=features),
                metadata=(("authorization", f"Bearer {keys.full}"),),
                timeout=10,
            )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_error_bodies_carry_no_internals(guarded: GatewayProcess, keys: Keys) -> None:
    with httpx.Client(base_url=guarded.url, headers=bearer(keys.full), timeout=5) as client:
        answers = [
            httpx.post(guarded.url + PREDICT, json=BODY, headers=bearer(keys.full + "x")),
            client.post(PREDICT, content=b"{not json"),
            client.post(PREDICT, content=b"x" * 2_000_000),
            client.post(PREDICT, json={"entity_id": "c", "features": {"amount": -1}}),
            client.post("/v1/models/nope/predict", json=BODY),
            client.post(PREDICT, json={"entity_id": "c", "cache": "only"}),
        ]
    assert [a.status_code for a in answers] == [401, 400, 413, 422, 404, 404]
    for answer in answers:
        text = answer.text
        for leak in ("Traceback", "127.0.0.1", "redis://", str(keys.path), keys.full, 'File "'):
            assert leak not in text, (answer.status_code, text)
