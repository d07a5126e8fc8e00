"""TritonClient: the gateway's only tritonclient user.

One gRPC channel per process, opened in the app lifespan. Errors are translated by gRPC
status code (never by message text) into the gateway's error tree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from gateway.breaker import CircuitBreaker
from gateway.config import TritonSettings
from gateway.errors import GatewayError, InferenceFailed, InferenceTimeout, InferenceUnavailable
from gateway.spec import ModelSpec
from gateway.telemetry.calls import triton_call

_UNAVAILABLE = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.NOT_FOUND",
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.CANCELLED",
    }
)
_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
}


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
        self._client = InferenceServerClient(url=settings.url, channel_args=_channel_args(settings))

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
        await self._client.close()

    async def model_ready(self, name: str, version: str = "") -> bool:
        try:
            return bool(
                await self._client.is_model_ready(
                    name, version, client_timeout=self._settings.timeout_s
                )
            )
        except InferenceServerException:
            return False

    async def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        """Triton's metadata (JSON form) with the model config under ``"config"``."""
        try:
            result = await self._client.get_model_metadata(
                name, version, as_json=True, client_timeout=self._settings.timeout_s
            )
            config = await self._client.get_model_config(
                name, version, as_json=True, client_timeout=self._settings.timeout_s
            )
        except InferenceServerException as e:
            raise _translate(e) from e
        result["config"] = config["config"]
        return dict(result)

    async def infer(
        self,
        spec: ModelSpec,
        version: str,
        rows: npt.NDArray[np.floating[Any]],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        breaker = self.breaker
        if not breaker.allow():
            unavailable = InferenceUnavailable("inference server failing: circuit open")
            unavailable.retry_after_s = max(1, math.ceil(breaker.retry_after_s))
            raise unavailable
        tensor = InferInput(spec.input_name, list(rows.shape), _DATATYPES[rows.dtype])
        tensor.set_data_from_numpy(rows)
        outputs = [InferRequestedOutput(o.name) for o in spec.outputs]
        budget_s = (
            self._settings.timeout_s
            if timeout_s is None
            else min(timeout_s, self._settings.timeout_s)
        )
        with triton_call(spec.name, spec.triton_name, version, len(rows)) as call:
            try:
                response = await self._client.infer(
                    spec.triton_name,
                    [tensor],
                    model_version=version,
                    outputs=outputs,
                    client_timeout=budget_s,
                    # Triton's gRPC frontend ignores the gRPC deadline; this per-request
                    # timeout (µs) lets its queue policy drop a request nobody waits for.
                    timeout=max(1, int(budget_s * 1_000_000)),
                    # traceparent only when this call's span is sampled (else None).
                    headers=call.headers,
                )
            except InferenceServerException as e:
                error = _translate(e)
                if not isinstance(error, InferenceFailed):
                    breaker.record_failure()
                raise error from e
            except BaseException:
                # Cancelled (the caller's own deadline): says nothing about Triton's health,
                # but a half-open probe must not stay claimed forever.
                breaker.release_probe()
                raise
        breaker.record_success()
        columns = [response.as_numpy(o.name).reshape(len(rows)) for o in spec.outputs]
        scores = columns[0][:, None] if len(columns) == 1 else np.stack(columns, axis=1)
        return InferenceResult(
            scores=scores, model_version=response.get_response().model_version or version
        )


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


def _translate(error: InferenceServerException) -> GatewayError:
    status = error.status() or ""
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return InferenceTimeout("inference deadline exceeded")
    if status == "StatusCode.UNAVAILABLE" and "timeout" in (error.message() or "").lower():
        # Triton's queue policy rejected a request whose per-request timeout expired.
        return InferenceTimeout("inference deadline exceeded in Triton's queue")
    if status in _UNAVAILABLE:
        return InferenceUnavailable("inference server unavailable")
    return InferenceFailed("inference server rejected the request")
