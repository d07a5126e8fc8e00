"""Typed async clients for client apps: :class:`GatewayClient` (REST) and
:class:`GatewayGrpcClient` (gRPC). Both return the same dataclasses and raise the same
:class:`GatewayCallError`, so an app can switch transports without touching its logic.

Each client holds one connection pool (httpx) or one channel (gRPC); create it once and reuse
it for every call (``async with GatewayGrpcClient("host:50051") as gw: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import grpc
import httpx

from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc

CacheMode = Literal["prefer", "bypass", "only"]
Source = Literal["cache", "stale", "model", "default", "none"]
Features = Mapping[str, float | bool]

_PB_CACHE: dict[CacheMode, int] = {
    "prefer": pb.CACHE_MODE_PREFER,
    "bypass": pb.CACHE_MODE_BYPASS,
    "only": pb.CACHE_MODE_ONLY,
}
_PB_SOURCE: dict[int, Source] = {
    pb.SOURCE_CACHE: "cache",
    pb.SOURCE_MODEL: "model",
    pb.SOURCE_NONE: "none",
    pb.SOURCE_STALE: "stale",
    pb.SOURCE_DEFAULT: "default",
}


@dataclass(frozen=True, slots=True)
class EntityScore:
    entity_id: str
    scores: dict[str, float] | None
    """Score per model output; None only for a batch item that got no answer."""
    source: Source
    prediction_age_s: float | None
    feature_age_s: float | None
    flags: tuple[str, ...] = ()
    """revalidating, fallback, old_features, no_feature_store."""


@dataclass(frozen=True, slots=True)
class PredictResult:
    model: str
    model_version: str
    request_id: str
    prediction: EntityScore


@dataclass(frozen=True, slots=True)
class BatchResult:
    model: str
    model_version: str
    request_id: str
    predictions: list[EntityScore]


@dataclass(frozen=True, slots=True)
class Instance:
    entity_id: str
    features: Features | None = None


class GatewayCallError(Exception):
    """The gateway answered with an error (both transports)."""

    def __init__(
        self,
        error_type: str,
        detail: str,
        *,
        field: str | None = None,
        http_status: int | None = None,
        grpc_code: grpc.StatusCode | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(f"{error_type}: {detail}" + (f" (field {field})" if field else ""))
        self.error_type = error_type
        """The gateway's error class name, e.g. ``InvalidRequest``, ``ModelNotFound``."""
        self.detail = detail
        self.field = field
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.retry_after_s = retry_after_s
        """When the gateway asked to retry later (shed, rate-limited, dependency down)."""


class GatewayClient:
    """REST client over one pooled ``httpx.AsyncClient``; ``api_key`` goes in every request."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
        )

    async def predict(
        self,
        model: str,
        entity_id: str,
        features: Features | None = None,
        *,
        cache: CacheMode = "prefer",
        request_id: str | None = None,
    ) -> PredictResult:
        body: dict[str, Any] = {"entity_id": entity_id, "cache": cache}
        if features:
            body["features"] = dict(features)
        data = await self._post(model, body, request_id)
        return PredictResult(
            data["model"], data["model_version"], data["request_id"], _entity_from_json(data)
        )

    async def predict_batch(
        self,
        model: str,
        instances: Sequence[Instance],
        *,
        cache: CacheMode = "prefer",
        request_id: str | None = None,
    ) -> BatchResult:
        body: dict[str, Any] = {
            "instances": [
                {"entity_id": i.entity_id, **({"features": dict(i.features)} if i.features else {})}
                for i in instances
            ],
            "cache": cache,
        }
        data = await self._post(model, body, request_id)
        return BatchResult(
            data["model"],
            data["model_version"],
            data["request_id"],
            [_entity_from_json(p) for p in data["predictions"]],
        )

    async def _post(self, model: str, body: dict[str, Any], request_id: str | None) -> Any:
        headers = {"X-Request-ID": request_id} if request_id else None
        response = await self._http.post(f"/v1/models/{model}/predict", json=body, headers=headers)
        if response.is_success:
            return response.json()
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        raise GatewayCallError(
            str(problem.get("type", "")).rpartition(":")[2] or "HTTPError",
            str(problem.get("detail", response.reason_phrase)),
            field=problem.get("field"),
            http_status=response.status_code,
            retry_after_s=_int_or_none(response.headers.get("retry-after")),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class GatewayGrpcClient:
    """gRPC client over one ``grpc.aio`` channel; ``timeout_s`` is each call's deadline and
    ``api_key`` goes in every call's ``authorization`` metadata."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self._stub = pb_grpc.GatewayStub(self._channel)  # type: ignore[no-untyped-call]

    async def predict(
        self,
        model: str,
        entity_id: str,
        features: Features | None = None,
        *,
        cache: CacheMode = "prefer",
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> PredictResult:
        request = pb.PredictRequest(
            model=model,
            entity_id=entity_id,
            features=_pb_features(features),
            cache=_PB_CACHE[cache],  # type: ignore[arg-type]
            request_id=request_id or "",
        )
        reply: pb.PredictResponse = await self._call(self._stub.Predict, request, timeout_s)
        return PredictResult(
            reply.model, reply.model_version, reply.request_id, _entity_from_pb(reply.prediction)
        )

    async def predict_batch(
        self,
        model: str,
        instances: Sequence[Instance],
        *,
        cache: CacheMode = "prefer",
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> BatchResult:
        request = pb.PredictBatchRequest(
            model=model,
            instances=[
                pb.Instance(entity_id=i.entity_id, features=_pb_features(i.features))
                for i in instances
            ],
            cache=_PB_CACHE[cache],  # type: ignore[arg-type]
            request_id=request_id or "",
        )
        reply: pb.PredictBatchResponse = await self._call(
            self._stub.PredictBatch, request, timeout_s
        )
        return BatchResult(
            reply.model,
            reply.model_version,
            reply.request_id,
            [_entity_from_pb(p) for p in reply.predictions],
        )

    async def _call(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(
                request, timeout=timeout_s or self._timeout_s, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as e:
            trailers = dict(e.trailing_metadata() or ())
            raise GatewayCallError(
                str(trailers.get("error-type", e.code().name)),
                e.details() or "",
                field=trailers.get("field"),
                grpc_code=e.code(),
                retry_after_s=_int_or_none(trailers.get("retry-after-s")),
            ) from e

    async def aclose(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _pb_features(features: Features | None) -> dict[str, float]:
    return {name: float(value) for name, value in (features or {}).items()}


def _entity_from_json(data: Mapping[str, Any]) -> EntityScore:
    return EntityScore(
        entity_id=data["entity_id"],
        scores=data["scores"],
        source=data["source"],
        prediction_age_s=data["prediction_age_s"],
        feature_age_s=data["feature_age_s"],
        flags=tuple(data.get("flags", ())),
    )


def _entity_from_pb(p: pb.Prediction) -> EntityScore:
    source = _PB_SOURCE.get(p.source, "none")
    return EntityScore(
        entity_id=p.entity_id,
        scores=None if source == "none" else dict(p.scores),
        source=source,
        prediction_age_s=p.prediction_age_s if p.HasField("prediction_age_s") else None,
        feature_age_s=p.feature_age_s if p.HasField("feature_age_s") else None,
        flags=tuple(p.flags),
    )
