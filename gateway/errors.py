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
    retry_after_s: int | None = None
    """Class default; an instance may carry its own (a rate limit's computed wait)."""

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


class NamespaceNotFound(GatewayError):
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND
    title = "Entity namespace not found"


class FeaturesTooOld(GatewayError):
    """The entity's stored features are older than the model's feature_freshness bound."""

    http_status = 422
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    title = "Features too old"


class DependencyUnavailable(GatewayError):
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE
    title = "Dependency unavailable"
    retry_after_s = 1


class FeatureStoreUnavailable(DependencyUnavailable):
    title = "Feature store unavailable"


class InferenceUnavailable(DependencyUnavailable):
    title = "Inference server unavailable"


class DeadlineExceeded(GatewayError):
    """The request's deadline passed (or is too close to do the work) before an answer."""

    http_status = 504
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    title = "Deadline exceeded"
    retry_after_s = 1


class InferenceTimeout(DeadlineExceeded):
    title = "Inference deadline exceeded"


class InferenceFailed(GatewayError):
    """Triton rejected or failed the request for a reason that is not the client's input."""

    http_status = 502
    grpc_status = grpc.StatusCode.INTERNAL
    title = "Inference failed"


class Unauthenticated(GatewayError):
    """No API key, or one that is unknown, malformed or revoked (never says which)."""

    http_status = 401
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    title = "Unauthenticated"


class PermissionDenied(GatewayError):
    """A valid API key asked for a model that is not on its allow-list."""

    http_status = 403
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    title = "Permission denied"


class RateLimited(GatewayError):
    """The client's token bucket is empty; ``retry_after_s`` says when the next token comes."""

    http_status = 429
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    title = "Rate limit exceeded"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Overloaded(GatewayError):
    """The process is at its in-flight bound; the request was shed before any work."""

    http_status = 503
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    title = "Overloaded"
    retry_after_s = 1


class SpecError(Exception):
    """The model spec is invalid or disagrees with Triton; start-up must stop."""


class KeysFileError(Exception):
    """The API keys file is missing or invalid (at start-up this stops the gateway)."""
