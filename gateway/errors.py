"""The gateway's error tree. Each class declares its HTTP and gRPC status once.

The REST exception handler and the gRPC interceptor both read these attributes, so the two
transports cannot drift apart. Library errors are translated where the library is called.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc


class GatewayError(Exception):
    """Base class: an error with a defined answer for clients."""

    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    title: ClassVar[str] = "Internal error"
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """RFC 9457 problem details body (no internals, no stack traces)."""
        body: dict[str, Any] = {
            "type": f"urn:gateway:error:{type(self).__name__}",
            "title": self.title,
            "status": self.http_status,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidRequest(GatewayError):
    http_status = 422
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    title = "Invalid request"


class MalformedBody(GatewayError):
    http_status = 400
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    title = "Malformed request body"


class BodyTooLarge(GatewayError):
    http_status = 413
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    title = "Request body too large"


class ClientDisconnected(GatewayError):
    """The client went away mid-request; nobody reads the answer, nothing is logged."""

    http_status = 499
    grpc_status = grpc.StatusCode.CANCELLED
    title = "Client closed request"


class ModelNotFound(GatewayError):
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND
    title = "Model not found"


class PredictionNotCached(GatewayError):
    """cache=only was asked for and no fresh cached prediction exists."""

    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND
    title = "No cached prediction"


class DependencyUnavailable(GatewayError):
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    title = "Dependency unavailable"
    retry_after_s = 1


class FeatureStoreUnavailable(DependencyUnavailable):
    title = "Feature store unavailable"


class InferenceUnavailable(DependencyUnavailable):
    title = "Inference server unavailable"


class InferenceTimeout(GatewayError):
    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    title = "Inference deadline exceeded"
    retry_after_s = 1


class InferenceFailed(GatewayError):
    """Triton rejected or failed the request for a reason that is not the client's input."""

    http_status = 502
    grpc_status = grpc.StatusCode.INTERNAL
    title = "Inference failed"


class SpecError(Exception):
    """The model spec is invalid or disagrees with Triton; start-up must stop."""
