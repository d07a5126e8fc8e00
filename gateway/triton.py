"""TritonClient: the gateway's only client of Triton's gRPC API.

One gRPC channel per process, opened in the app lifespan. Calls go straight to the
``GRPCInferenceService`` stub with the protobuf messages of tritonclient's package, not
through ``tritonclient.grpc.aio.InferenceServerClient``: its per-call Python (``InferInput``,
``InferRequestedOutput``, request assembly, ``InferResult``, error re-raising) was a
measurable part of every real-time miss (docs/measurements.md). Errors are translated by gRPC
status code into the gateway's error tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.breaker import CircuitBreaker
from gateway.config import TritonSettings
from gateway.errors import GatewayError, InferenceFailed, InferenceTimeout, InferenceUnavailable
from gateway.spec import ModelSpec
from gateway.telemetry.calls import triton_call

_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
_DATATYPES: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
}
_NUMPY_TYPES: dict[str, np.dtype[Any]] = {name: dtype for dtype, name in _DATATYPES.items()}


@dataclass(frozen=True, slots=True)
class InferenceResult:
    scores: npt.NDArray[np.floating[Any]]
    """Shape [rows, n_outputs], outputs in spec order."""
    model_version: str


class TritonClient:
    def __init__(self, settings: TritonSettings) -> None:
        self._settings = settings
        self.breaker = CircuitBreaker(
            "triton", failure_threshold=settings.breaker_failures, open_s=settings.breaker_open_s
        )
        self._channel = grpc.aio.insecure_channel(settings.url, options=_channel_args(settings))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._outputs: dict[str, _Outputs] = {}

    async def __aenter__(self) -> TritonClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def model_ready(self, name: str, version: str = "") -> bool:
        try:
            reply = await self._stub.ModelReady(
                pb.ModelReadyRequest(name=name, version=version),
                timeout=self._settings.timeout_s,
            )
        except grpc.RpcError:
            return False
        return bool(reply.ready)

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's metadata (JSON form, proto field names) with the model config under
        ``"config"``."""
        try:
            metadata = await self._stub.ModelMetadata(
                pb.ModelMetadataRequest(name=name, version=version),
                timeout=self._settings.timeout_s,
            )
            config = await self._stub.ModelConfig(
                pb.ModelConfigRequest(name=name, version=version),
                timeout=self._settings.timeout_s,
            )
        except grpc.aio.AioRpcError as e:
            raise _translate(e.code(), e.details()) from e
        result: dict[str, Any] = json_format.MessageToDict(
            metadata, preserving_proto_field_name=True
        )
        result["config"] = json_format.MessageToDict(
            config.config, preserving_proto_field_name=True
        )
        return result

    async def infer(
        self,
        spec: ModelSpec,
        version: str,
        rows: npt.NDArray[np.floating[Any]],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        """Scores for ``rows`` ([rows, features], any of the float dtypes)."""
        return await self.infer_packed(
            spec,
            version,
            rows.tobytes(),
            rows.shape,
            datatype=_DATATYPES[rows.dtype],
            timeout_s=timeout_s,
        )

    async def infer_packed(
        self,
        spec: ModelSpec,
        version: str,
        raw: bytes,
        shape: tuple[int, ...],
        *,
        datatype: str | None = None,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        """:meth:`infer` for rows already packed as Triton takes them: little-endian values of
        ``datatype`` (default: the spec's input datatype), ``shape[0]`` rows."""
        breaker = self.breaker
        if not breaker.allow():
            unavailable = InferenceUnavailable("inference server failing: circuit open")
            unavailable.retry_after_s = max(1, math.ceil(breaker.retry_after_s))
            raise unavailable
        budget_s = (
            self._settings.timeout_s
            if timeout_s is None
            else min(timeout_s, self._settings.timeout_s)
        )
        outputs = self._outputs.get(spec.name) or self._outputs.setdefault(
            spec.name, _Outputs.of(spec)
        )
        request = pb.ModelInferRequest(
            model_name=spec.triton_name,
            model_version=version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=spec.input_name, datatype=datatype or spec.input_dtype, shape=shape
                )
            ],
            outputs=outputs.requested,
            raw_input_contents=[raw],
        )
        n_rows = shape[0]
        # Triton's gRPC frontend ignores the gRPC deadline; this per-request timeout (µs)
        # lets its queue policy drop a request nobody waits for.
        request.parameters["timeout"].int64_param = max(1, int(budget_s * 1_000_000))
        with triton_call(spec.name, spec.triton_name, version, n_rows) as call:
            # traceparent only when this call's span is sampled (else None).
            headers = call.headers
            try:
                response = await self._stub.ModelInfer(
                    request,
                    timeout=budget_s,
                    metadata=tuple(headers.items()) if headers else None,
                )
            except grpc.aio.AioRpcError as e:
                error = _translate(e.code(), e.details())
                if not isinstance(error, InferenceFailed):
                    breaker.record_failure()
                raise error from e
            except BaseException:
                # Cancelled (the caller's own deadline): says nothing about Triton's health,
                # but a half-open probe must not stay claimed forever.
                breaker.release_probe()
                raise
            try:
                scores = _scores(response, outputs.names, n_rows)
            except ValueError as e:
                # Triton answered, but not with the outputs the spec declares: not a failure
                # of the server's health (no breaker count), a model/spec mismatch.
                breaker.record_success()
                raise InferenceFailed("inference server answered with unexpected outputs") from e
        breaker.record_success()
        return InferenceResult(scores=scores, model_version=response.model_version or version)


@dataclass(frozen=True, slots=True)
class _Outputs:
    """A model's outputs in spec order, and the same as request messages (built once)."""

    names: tuple[str, ...]
    requested: tuple[pb.ModelInferRequest.InferRequestedOutputTensor, ...]

    @classmethod
    def of(cls, spec: ModelSpec) -> _Outputs:
        names = tuple(o.name for o in spec.outputs)
        return cls(
            names, tuple(pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in names)
        )


def _scores(
    response: pb.ModelInferResponse, names: tuple[str, ...], n_rows: int
) -> npt.NDArray[np.floating[Any]]:
    """[rows, outputs] in ``names`` order from the response's raw (binary) output contents."""
    if len(response.raw_output_contents) != len(response.outputs):
        raise ValueError("Triton's answer has no raw contents for some output")
    by_name = {
        output.name: (output.datatype, raw)
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=False)
    }
    columns = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"output {name!r} missing from Triton's answer")
        datatype, raw = by_name[name]
        dtype = _NUMPY_TYPES.get(datatype)
        if dtype is None:
            raise ValueError(f"output {name!r} has datatype {datatype}")
        if len(raw) != n_rows * dtype.itemsize:
            raise ValueError(f"output {name!r} holds {len(raw)} bytes for {n_rows} rows")
        columns.append(np.frombuffer(raw, dtype=dtype).reshape(n_rows))
    return columns[0][:, None] if len(columns) == 1 else np.stack(columns, axis=1)


def _channel_args(settings: TritonSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # Keepalive finds a dead Triton between requests instead of on the next call.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 2_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # gRPC's default reconnect backoff grows to 120 s; a restarted Triton must be used
        # again within about a second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


def _translate(status: grpc.StatusCode, message: str | None) -> GatewayError:
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return InferenceTimeout("inference deadline exceeded")
    if status == grpc.StatusCode.UNAVAILABLE and "timeout" in (message or "").lower():
        # Triton's queue policy rejected a request whose per-request timeout expired.
        return InferenceTimeout("inference deadline exceeded in Triton's queue")
    if status in _UNAVAILABLE:
        return InferenceUnavailable("inference server unavailable")
    return InferenceFailed("inference server rejected the request")
