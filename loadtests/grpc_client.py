"""gRPC calls for Locust: the blocking ``gateway.v1`` stub, each call reported as a request.

Locust only measures what it is told about. As its docs show for other protocols ("Testing
other systems"), every call fires ``environment.events.request`` with ``request_type="grpc"``,
its name, response time and length, and an exception on failure; a gRPC error becomes
``GrpcCallFailed("UNAVAILABLE: ...")``, so Locust's failure table groups by status code.

grpcio does its I/O in C, out of gevent's reach: without ``init_gevent()`` one waiting call
would block every user of the process. It must run after gevent's monkey-patching (Locust
patches before it imports a locustfile) and before any channel exists: at import, here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from google.protobuf.message import Message
from mix import MODEL, Call

from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()

Check = Callable[[Any], str | None]
"""A response check: ``None`` when the response is as expected, else what is wrong."""


class GrpcCallFailed(Exception):
    """A failed call as Locust reports it: status code first, then the details."""


def bearer_metadata(api_key: str) -> tuple[tuple[str, str], ...]:
    """The key as the gateway reads it on gRPC (gateway/api/grpc_guard.py), like REST's header."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def open_channel(target: str, *, tls: bool) -> grpc.Channel:
    if tls:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials())
    return grpc.insecure_channel(target)


class GatewayGrpc:
    """One user's channel to ``gateway.v1.Gateway``; ``call`` reports to Locust's stats."""

    def __init__(
        self,
        events: Any,
        target: str,
        *,
        metadata: Sequence[tuple[str, str]],
        deadline_s: float,
        tls: bool = False,
    ) -> None:
        self._events = events
        self._target = target
        self._metadata = tuple(metadata)
        self._deadline_s = deadline_s
        self._channel = open_channel(target, tls=tls)
        self.stub = pb_grpc.GatewayStub(self._channel)

    def call(
        self,
        name: str,
        method: grpc.UnaryUnaryMultiCallable[Any, Any],
        request: Message,
        check: Check,
    ) -> None:
        started_at = time.time()
        started = time.perf_counter()
        response: Message | None = None
        exception: Exception | None = None
        try:
            response = method(request, timeout=self._deadline_s, metadata=self._metadata)
        except grpc.RpcError as e:
            exception = GrpcCallFailed(_status_text(e))
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response is not None and (problem := check(response)) is not None:
            exception = GrpcCallFailed(f"unexpected response: {problem}")
        self._events.request.fire(
            request_type="grpc",
            name=name,
            response_time=elapsed_ms,
            response_length=0 if response is None else response.ByteSize(),
            response=response,
            context={},
            exception=exception,
            start_time=started_at,
            url=self._target,
        )

    def close(self) -> None:
        self._channel.close()


def predict_request(call: Call) -> pb.PredictRequest:
    cache = pb.CACHE_MODE_BYPASS if call.bypass else pb.CACHE_MODE_PREFER
    return pb.PredictRequest(
        model=MODEL, entity_id=call.entity_ids[0], features=call.features, cache=cache
    )


def batch_request(call: Call) -> pb.PredictBatchRequest:
    cache = pb.CACHE_MODE_BYPASS if call.bypass else pb.CACHE_MODE_PREFER
    instances = [pb.Instance(entity_id=e) for e in call.entity_ids]
    return pb.PredictBatchRequest(model=MODEL, instances=instances, cache=cache)


def check_predict(response: pb.PredictResponse) -> str | None:
    return None if response.prediction.scores else f"no scores: {response.prediction}"[:200]


def check_batch(expected: int) -> Check:
    def check(response: pb.PredictBatchResponse) -> str | None:
        got = len(response.predictions)
        return None if got == expected else f"{got} predictions for {expected} instances"

    return check


def _status_text(error: grpc.RpcError) -> str:
    if isinstance(error, grpc.Call):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def warm_up(
    target: str,
    entity_ids: Sequence[str],
    *,
    metadata: Sequence[tuple[str, str]],
    tls: bool,
    chunk: int,
) -> None:
    """Score ``entity_ids`` once over gRPC, outside the stats (a run without REST users)."""
    channel = open_channel(target, tls=tls)
    try:
        stub = pb_grpc.GatewayStub(channel)
        for start in range(0, len(entity_ids), chunk):
            request = batch_request(Call(tuple(entity_ids[start : start + chunk])))
            stub.PredictBatch(request, timeout=30, metadata=tuple(metadata))
    finally:
        channel.close()
