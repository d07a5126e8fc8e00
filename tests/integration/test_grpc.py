"""The gRPC API over a real channel, against the real gateway process, Redis and Triton.

Parity tests send the same cases through REST and gRPC (the typed clients in
``gateway.client``) and compare the answers; the rest covers every error mapping, deadlines,
the health service and server reflection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import grpc
import httpx
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from gateway.client import (
    GatewayCallError,
    GatewayClient,
    GatewayGrpcClient,
    Instance,
)
from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc
from tests.integration.conftest import SPEC_PATH, wait_until
from tests.integration.helpers import TYPICAL, put_cached, put_features, reference_score
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

pytestmark = pytest.mark.integration
MODEL = "fraud_scorer"


def new_id() -> str:
    return f"card-g{uuid.uuid4().hex[:12]}"


class GrpcGateway(NamedTuple):
    process: GatewayProcess
    grpc_target: str


@pytest.fixture(scope="module")
def grpc_gateway(redis_server: RedisServer, triton_server: TritonServer) -> Iterator[GrpcGateway]:
    """A gateway of its own, so its gRPC port is a free one known to this module.

    Access control is off here (explicitly): these tests are about the transport; keys, the
    allow-list and RESOURCE_EXHAUSTED over gRPC are covered in test_access.py.
    """
    port = free_port()
    with GatewayProcess(
        spec_path=SPEC_PATH,
        redis_url=redis_server.url,
        triton_url=triton_server.grpc_url,
        auth=False,
        env={"GATEWAY_GRPC_PORT": str(port)},
    ) as process:
        yield GrpcGateway(process, f"127.0.0.1:{port}")


@pytest.fixture
def grpc_target(grpc_gateway: GrpcGateway) -> str:
    return grpc_gateway.grpc_target


@pytest.fixture
async def rest_client(grpc_gateway: GrpcGateway) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(grpc_gateway.process.url, timeout_s=10) as client:
        yield client


@pytest.fixture
async def grpc_client(grpc_target: str) -> AsyncIterator[GatewayGrpcClient]:
    async with GatewayGrpcClient(grpc_target, timeout_s=10) as client:
        yield client


@pytest.fixture
async def channel(grpc_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_target) as ch:
        yield ch


# --- parity -------------------------------------------------------------------------------


async def test_model_scores_are_identical_over_rest_and_grpc(
    rest_client: GatewayClient, grpc_client: GatewayGrpcClient, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)

    via_rest = await rest_client.predict(MODEL, entity, cache="bypass")
    via_grpc = await grpc_client.predict(MODEL, entity, cache="bypass")

    assert via_grpc.prediction.source == via_rest.prediction.source == "model"
    assert via_grpc.prediction.scores == via_rest.prediction.scores
    assert via_grpc.prediction.scores is not None
    assert via_grpc.prediction.scores["fraud_probability"] == pytest.approx(
        reference_score(TYPICAL), abs=1e-6
    )
    assert (via_grpc.model, via_grpc.model_version) == (via_rest.model, via_rest.model_version)
    assert via_grpc.prediction.prediction_age_s == 0.0
    assert via_grpc.prediction.feature_age_s is not None


async def test_feature_overrides_including_bools_match_rest(
    rest_client: GatewayClient, grpc_client: GatewayGrpcClient, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)
    overrides = {"amount": 4999.0, "card_present": False, "is_online": True, "hour_of_day": 3}

    via_rest = await rest_client.predict(MODEL, entity, overrides)
    via_grpc = await grpc_client.predict(MODEL, entity, overrides)

    assert via_grpc.prediction.scores == via_rest.prediction.scores
    assert via_grpc.prediction.source == via_rest.prediction.source == "model"
    assert via_grpc.prediction.scores is not None
    assert via_grpc.prediction.scores["fraud_probability"] == pytest.approx(
        reference_score({**TYPICAL, **overrides}), abs=1e-6
    )


async def test_cached_prediction_is_served_alike(
    rest_client: GatewayClient, grpc_client: GatewayGrpcClient, kv: redis.Redis
) -> None:
    entity = new_id()
    put_cached(kv, entity, 0.125, scored_at=time.time() - 30)

    via_rest = await rest_client.predict(MODEL, entity)
    via_grpc = await grpc_client.predict(MODEL, entity, request_id="parity-1")

    assert via_grpc.prediction.source == via_rest.prediction.source == "cache"
    assert via_grpc.prediction.scores == via_rest.prediction.scores == {"fraud_probability": 0.125}
    assert via_grpc.prediction.prediction_age_s == pytest.approx(30, abs=2)
    assert via_grpc.prediction.feature_age_s is None
    assert via_grpc.request_id == "parity-1"


async def test_batch_answers_alike_in_request_order(
    rest_client: GatewayClient, grpc_client: GatewayGrpcClient, kv: redis.Redis
) -> None:
    def arrange() -> list[Instance]:
        # Fresh entities per transport: the first call's write-back would change the second's.
        hit, miss = new_id(), new_id()
        put_cached(kv, hit, 0.5, scored_at=time.time() - 5)
        put_features(kv, miss, TYPICAL)
        return [Instance(hit), Instance(miss), Instance(miss, {"amount": 10.0})]

    rest_instances, grpc_instances = arrange(), arrange()
    via_rest = await rest_client.predict_batch(MODEL, rest_instances)
    via_grpc = await grpc_client.predict_batch(MODEL, grpc_instances)

    assert [p.entity_id for p in via_grpc.predictions] == [i.entity_id for i in grpc_instances]
    assert [p.source for p in via_grpc.predictions] == ["cache", "model", "model"]
    assert [p.source for p in via_grpc.predictions] == [p.source for p in via_rest.predictions]
    assert [p.scores for p in via_grpc.predictions] == [p.scores for p in via_rest.predictions]


async def test_batch_cache_only_marks_missing_entries_alike(
    rest_client: GatewayClient, grpc_client: GatewayGrpcClient
) -> None:
    instances = [Instance(new_id())]

    via_rest = await rest_client.predict_batch(MODEL, instances, cache="only")
    via_grpc = await grpc_client.predict_batch(MODEL, instances, cache="only")

    assert via_grpc.predictions == via_rest.predictions
    assert via_grpc.predictions[0].source == "none"
    assert via_grpc.predictions[0].scores is None


async def test_list_and_get_model_match_rest(
    channel: grpc.aio.Channel, grpc_gateway: GrpcGateway
) -> None:
    stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
    async with httpx.AsyncClient(base_url=grpc_gateway.process.url, timeout=5) as http:
        rest_models = (await http.get("/v1/models")).json()["models"]
        rest_model = (await http.get(f"/v1/models/{MODEL}")).json()

    listed = await stub.ListModels(pb.ListModelsRequest(), timeout=5)
    model = await stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=5)

    assert [{"name": m.name, "version": m.version, "description": m.description} for m in
            listed.models] == rest_models  # fmt: skip
    assert model.served_version == rest_model["served_version"]
    assert model.max_batch_size == rest_model["max_batch_size"]
    assert [f.name for f in model.features] == [f["name"] for f in rest_model["features"]]
    assert [f.required for f in model.features] == [f["required"] for f in rest_model["features"]]
    assert model.triton.input == rest_model["triton"]["input"]


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity_id", "features", "field"),
    [
        ("", None, "entity_id"),
        ("has space", None, "entity_id"),
        ("card-1", {"amount": -1.0}, "features.amount"),
        ("card-1", {"no_such_feature": 1.0}, "features.no_such_feature"),
        ("card-1", {"card_present": 2.0}, "features.card_present"),
        ("card-1", {"hour_of_day": 3.5}, "features.hour_of_day"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field_like_rest(
    rest_client: GatewayClient,
    grpc_client: GatewayGrpcClient,
    entity_id: str,
    features: dict[str, float] | None,
    field: str,
) -> None:
    with pytest.raises(GatewayCallError) as rest_error:
        await rest_client.predict(MODEL, entity_id, features)
    with pytest.raises(GatewayCallError) as grpc_error:
        await grpc_client.predict(MODEL, entity_id, features)

    assert grpc_error.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert rest_error.value.http_status == 422
    assert grpc_error.value.field == rest_error.value.field == field
    assert grpc_error.value.error_type == rest_error.value.error_type == "InvalidRequest"
    assert grpc_error.value.detail == rest_error.value.detail


async def test_bad_batch_item_names_its_index(grpc_client: GatewayGrpcClient) -> None:
    with pytest.raises(GatewayCallError) as error:
        await grpc_client.predict_batch(MODEL, [Instance("card-1"), Instance("")])

    assert error.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.field == "instances[1].entity_id"


async def test_empty_batch_is_invalid_argument(grpc_client: GatewayGrpcClient) -> None:
    with pytest.raises(GatewayCallError) as error:
        await grpc_client.predict_batch(MODEL, [])

    assert error.value.grpc_code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.field == "instances"


async def test_unknown_cache_mode_number_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
    request = pb.PredictRequest(model=MODEL, entity_id="card-1", cache=9)  # type: ignore[arg-type]

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Predict(request, timeout=5)

    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("field", "cache") in tuple(error.value.trailing_metadata() or ())


async def test_unknown_model_is_not_found(grpc_client: GatewayGrpcClient) -> None:
    with pytest.raises(GatewayCallError) as error:
        await grpc_client.predict("no_such_model", "card-1")

    assert error.value.grpc_code == grpc.StatusCode.NOT_FOUND
    assert error.value.error_type == "ModelNotFound"


async def test_get_unknown_model_is_not_found(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetModel(pb.GetModelRequest(model="no_such_model"), timeout=5)

    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cache_only_without_entry_is_not_found(grpc_client: GatewayGrpcClient) -> None:
    with pytest.raises(GatewayCallError) as error:
        await grpc_client.predict(MODEL, new_id(), cache="only")

    assert error.value.grpc_code == grpc.StatusCode.NOT_FOUND
    assert error.value.error_type == "PredictionNotCached"


async def test_tiny_deadline_is_deadline_exceeded(
    grpc_client: GatewayGrpcClient, kv: redis.Redis
) -> None:
    entity = new_id()
    put_features(kv, entity, TYPICAL)

    with pytest.raises(GatewayCallError) as error:
        await grpc_client.predict(MODEL, entity, cache="bypass", timeout_s=0.0005)

    assert error.value.grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The channel is still good after a call ran out of time.
    assert (await grpc_client.predict(MODEL, entity)).prediction.scores is not None


def test_redis_down_is_unavailable_and_health_not_serving(triton_server: TritonServer) -> None:
    port = free_port()
    with (
        RedisServer() as own_redis,
        GatewayProcess(
            spec_path=SPEC_PATH,
            redis_url=own_redis.url,
            triton_url=triton_server.grpc_url,
            auth=False,
            env={"GATEWAY_GRPC_PORT": str(port), "GATEWAY_GRPC_HEALTH_INTERVAL_S": "0.1"},
        ),
        grpc.insecure_channel(f"127.0.0.1:{port}") as sync_channel,
    ):
        health = health_pb2_grpc.HealthStub(sync_channel)
        stub = pb_grpc.GatewayStub(sync_channel)  # type: ignore[no-untyped-call]
        own_redis.stop()

        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(pb.PredictRequest(model=MODEL, entity_id="card-000001"), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        wait_until(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
        )

        own_redis.start()
        wait_until(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                == health_pb2.HealthCheckResponse.SERVING
            ),
            timeout_s=10,
        )


# --- health and reflection -----------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "gateway.v1.Gateway"])
async def test_health_service_reports_serving(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_gateway_service(grpc_target: str) -> None:
    with grpc.insecure_channel(grpc_target) as sync_channel:
        database = ProtoReflectionDescriptorDatabase(sync_channel)
        services = database.get_services()
        gateway_file = database.FindFileContainingSymbol("gateway.v1.Gateway")

    assert "gateway.v1.Gateway" in services
    assert "grpc.health.v1.Health" in services
    assert gateway_file.package == "gateway.v1"
