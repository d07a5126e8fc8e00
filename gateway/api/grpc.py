"""gRPC transport: proto in → PredictionService → proto out. No business rules here.

Requests are turned into the same dict shapes the REST API decodes from JSON and validated by
``gateway.validation``, so both transports share one code path. Errors are mapped once, by
:class:`GatewayErrorInterceptor`, from the ``grpc_status`` each ``GatewayError`` declares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.api.grpc_wrap import Behavior, UnaryWrapInterceptor
from gateway.auth import caller_may_use
from gateway.config import Settings
from gateway.errors import GatewayError, InferenceTimeout
from gateway.service import Prediction, PredictionService
from gateway.spec import ModelSpec
from gateway.telemetry import tracing
from gateway.telemetry.context import bind_request_id
from gateway.telemetry.grpc import RefusalCounter
from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc
from gateway.validation import (
    parse_entity_id,
    parse_predict_body,
    request_budget,
    request_id_or_new,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["Gateway"].full_name
# The generated registration function is untyped; this gives it its (simple) signature.
_add_gateway_servicer: Callable[[GatewayServicer, grpc.aio.Server], None] = (
    pb_grpc.add_GatewayServicer_to_server
)
_CACHE_MODES: dict[int, str] = {
    pb.CACHE_MODE_UNSPECIFIED: "prefer",
    pb.CACHE_MODE_PREFER: "prefer",
    pb.CACHE_MODE_BYPASS: "bypass",
    pb.CACHE_MODE_ONLY: "only",
}
_SOURCES: dict[str, int] = {
    "cache": pb.SOURCE_CACHE,
    "model": pb.SOURCE_MODEL,
    "none": pb.SOURCE_NONE,
    "stale": pb.SOURCE_STALE,
    "default": pb.SOURCE_DEFAULT,
}


class GatewayServicer(pb_grpc.GatewayServicer):
    def __init__(self, service: PredictionService) -> None:
        self._service = service

    async def Predict(  # noqa: N802 - names come from the proto
        self, request: pb.PredictRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictResponse:
        request_id = _request_id(request.request_id, context)
        service = self._service
        spec = service.spec(request.model)
        cache = _cache_mode(request.cache)
        if (
            not request.features
            and (cache == "prefer" or cache == "bypass")
            and not tracing.in_sampled_trace()
        ):
            # The common request (as REST's plain body): validated as parse_predict_body would.
            result = await _within_deadline(
                service.predict_entity(
                    spec,
                    parse_entity_id(spec, request.entity_id, "entity_id"),
                    mode=cache,
                    timeout_s=request_budget(spec, context.time_remaining()),
                ),
                context,
            )
        else:
            body = {
                "entity_id": request.entity_id,
                "features": _features(request.features),
                "cache": cache,
            }
            result = await _within_deadline(
                service.predict(
                    spec,
                    tracing.call("validate", parse_predict_body, spec, body),
                    timeout_s=request_budget(spec, context.time_remaining()),
                ),
                context,
            )
        if isinstance(result, Prediction):
            model_version, prediction = service.served_versions[spec.name], result
        else:
            model_version, prediction = result.model_version, result.predictions[0]
        return pb.PredictResponse(
            model=spec.name,
            model_version=model_version,
            prediction=_prediction(spec, prediction),
            request_id=request_id,
        )

    async def PredictBatch(  # noqa: N802
        self, request: pb.PredictBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PredictBatchResponse:
        request_id = _request_id(request.request_id, context)
        spec = self._service.spec(request.model)
        body = {
            "instances": [
                {"entity_id": item.entity_id, "features": _features(item.features)}
                for item in request.instances
            ],
            "cache": _cache_mode(request.cache),
        }
        outcome = await _within_deadline(
            self._service.predict(
                spec,
                tracing.call("validate", parse_predict_body, spec, body),
                timeout_s=request_budget(spec, context.time_remaining()),
            ),
            context,
        )
        return pb.PredictBatchResponse(
            model=spec.name,
            model_version=outcome.model_version,
            predictions=[_prediction(spec, p) for p in outcome.predictions],
            request_id=request_id,
        )

    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[
                pb.ModelSummary(
                    name=spec.name,
                    version=self._service.served_versions[spec.name],
                    description=spec.description,
                )
                for spec in self._service.specs.values()
                if caller_may_use(spec.name)  # a key sees only the models it may use
            ]
        )

    async def GetModel(  # noqa: N802
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInfo:
        spec = self._service.spec(request.model)
        body = spec.as_dict()  # the REST body, so both transports describe a model alike
        return pb.ModelInfo(
            name=spec.name,
            description=spec.description,
            served_version=self._service.served_versions[spec.name],
            triton=pb.TritonModel(**body["triton"]),
            entity=pb.Entity(**body["entity"]),
            max_batch_size=spec.max_batch_size,
            cache=pb.CachePolicy(**body["cache"]),
            fallback=pb.FallbackPolicy(
                default_scores=body["fallback"]["default_scores"] or {},
                without_feature_store=body["fallback"]["without_feature_store"],
            ),
            feature_freshness=pb.FeatureFreshness(**body["feature_freshness"]),
            outputs=[pb.Output(**o) for o in body["outputs"]],
            features=[pb.Feature(**f) for f in body["features"]],
        )


class GatewayErrorInterceptor(UnaryWrapInterceptor):
    """The one place a ``GatewayError`` becomes a gRPC status (its declared ``grpc_status``).

    The detail is the error's message; trailing metadata carry ``error-type``, ``field`` (the
    offending request field, as in REST's problem body) and ``retry-after-s`` where set.
    """

    def __init__(self) -> None:
        super().__init__(SERVICE_NAME)

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        return _guard(behavior)


def _guard(behavior: Behavior) -> Behavior:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except GatewayError as error:
            await abort_with(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception:
            # The traceback goes to the server log only; clients get an opaque INTERNAL.
            log.exception("unhandled error", extra={"transport": "grpc"})
            await abort_with(context, GatewayError("internal error"))

    return guarded


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: GatewayError) -> NoReturn:
    metadata: list[tuple[str, str]] = [("error-type", type(error).__name__)]
    if error.field is not None:
        metadata.append(("field", error.field))
    if error.retry_after_s is not None:
        metadata.append(("retry-after-s", str(error.retry_after_s)))
    await context.abort(error.grpc_status, error.detail, trailing_metadata=tuple(metadata))
    raise AssertionError("context.abort() raises")  # for type checkers: grpc has no stubs


@contextlib.asynccontextmanager
async def serve_grpc(
    settings: Settings,
    service: PredictionService,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[int]:
    """Serve gRPC on ``settings.grpc_port`` in the running event loop; yields the bound port.

    Shares ``service`` (and so every client) with the REST app. ``grpc.so_reuseport`` lets
    every uvicorn worker bind the same port; the kernel spreads connections among them.
    ``interceptors`` run inside the error interceptor (their GatewayErrors are mapped too).
    """
    server = grpc.aio.server(
        interceptors=[RefusalCounter(SERVICE_NAME), GatewayErrorInterceptor(), *interceptors],
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ],
        # Beyond this many in-flight calls new ones get RESOURCE_EXHAUSTED instead of queueing
        # (counted as shed by RefusalCounter).
        maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
    )
    _add_gateway_servicer(GatewayServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.http_host}:{settings.grpc_port}")
    await _update_health(service, health_servicer)
    await server.start()
    watcher = asyncio.create_task(
        _watch_readiness(service, health_servicer, settings.grpc_health_interval_s)
    )
    try:
        yield port
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.grpc_grace_s)


async def _update_health(
    service: PredictionService, health_servicer: health.aio.HealthServicer
) -> None:
    """The same checks as ``/readyz``: SERVING only when all of them pass."""
    try:
        ready = all((await service.readiness()).values())
    except GatewayError:
        ready = False
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if ready
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (health.OVERALL_HEALTH, SERVICE_NAME):
        await health_servicer.set(name, status)


async def _watch_readiness(
    service: PredictionService, health_servicer: health.aio.HealthServicer, interval_s: float
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await _update_health(service, health_servicer)


async def _within_deadline(work: Awaitable[T], context: grpc.aio.ServicerContext[Any, Any]) -> T:
    """Stop working for a caller whose deadline has passed (it no longer reads the answer)."""
    remaining = context.time_remaining()
    if remaining is None:
        return await work
    try:
        return await asyncio.wait_for(work, timeout=remaining)
    except TimeoutError as e:
        raise InferenceTimeout("the call's deadline passed before the prediction was ready") from e


def _request_id(supplied: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    if not supplied:
        metadata = dict(context.invocation_metadata() or ())
        value = metadata.get("x-request-id", "")
        supplied = value if isinstance(value, str) else ""
    request_id = request_id_or_new(supplied)
    bind_request_id(request_id)  # log lines of this call carry it
    return request_id


def _features(values: Mapping[str, float]) -> dict[str, float | int]:
    # proto carries every feature as a double; 0 and 1 go in as ints so that bool features
    # accept them exactly as the JSON API does (validation checks everything else).
    return {name: int(v) if v in (0.0, 1.0) else v for name, v in values.items()}


def _cache_mode(value: int) -> Any:
    # An unknown enum number is passed on as is, so validation rejects it naming ``cache``.
    return _CACHE_MODES.get(value, value)


def _prediction(spec: ModelSpec, p: Prediction) -> pb.Prediction:
    return pb.Prediction(
        entity_id=p.entity_id,
        scores={} if p.scores is None else dict(zip(spec.output_names, p.scores, strict=True)),
        source=_SOURCES[p.source],  # type: ignore[arg-type]
        prediction_age_s=_round(p.prediction_age_s),
        feature_age_s=_round(p.feature_age_s),
        flags=p.flags,
    )


def _round(value: float | None) -> float | None:
    # The same rounding as the REST body, so the two transports answer alike.
    return None if value is None else round(value, 3)
