"""Gateway settings, read from the environment (prefix ``GATEWAY_``, nested with ``__``).

Settings are built explicitly by the CLI or the tests (``Settings()``), never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.stream.settings import StreamSettings


class RedisSettings(BaseModel):
    """Connection to the Redis that holds online features and cached predictions."""

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL without credentials (``redis://host:port/db``)."""
    password: SecretStr | None = None
    """Password, if any. Prefer ``password_file`` in deployments."""
    password_file: Path | None = None
    """File holding the password (a mounted Secret); read once at start-up."""
    socket_timeout_s: float = 0.25
    """Upper bound of one Redis round trip; a slower Redis is treated as unavailable. (On the
    predict path's pipelined connection: from sending an exchange to its last reply.)"""
    connect_timeout_s: float = 0.5
    """Upper bound for opening a connection."""
    max_connections: int = 64
    """Connection pool size per process, for everything but the predict path's lookups and
    write-backs (they share one pipelined connection per process: gateway/redis_pipe.py)."""
    pool_timeout_s: float = 1.0
    """Longest wait for a free pooled connection (a burst's own backlog, not a sick Redis)."""
    breaker_failures: int = 5
    """Consecutive failed round trips that open the circuit (calls then fail at once)."""
    breaker_open_s: float = 1.0
    """How long the circuit stays open before one probe round trip is let through."""

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip() or None
        return self.password.get_secret_value() if self.password else None


class TritonSettings(BaseModel):
    """Connection to Triton's gRPC endpoint."""

    url: str = "127.0.0.1:8001"
    """Triton gRPC address ``host:port``."""
    timeout_s: float = 1.0
    """Deadline for one inference call."""
    startup_wait_s: float = 60.0
    """How long start-up waits for the served models to become ready."""
    max_message_bytes: int = 16 * 1024 * 1024
    """gRPC send/receive limit on the Triton channel (a full batch fits easily)."""
    breaker_failures: int = 5
    """Consecutive unavailable/timeout answers that open the circuit (calls then fail at once)."""
    breaker_open_s: float = 1.0
    """How long the circuit stays open before one probe call is let through."""


class AuthSettings(BaseModel):
    """API-key access control (docs/security.md). On unless explicitly disabled."""

    enabled: bool = True
    """Require an API key on every route but health, metrics (and docs when public_docs)."""
    keys_file: Path | None = None
    """YAML/JSON keys file (hashes only, a mounted Secret); required when enabled."""
    reload_interval_s: float = 5.0
    """How often the keys file's mtime is checked; a changed file is re-read (rotation)."""
    cache_size: int = 4096
    """Verified keys remembered per process (LRU): one dict lookup per request after that."""
    public_docs: bool = False
    """Serve /docs and /openapi.json without a key (they describe the API, hold no data)."""

    @field_validator("keys_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # GATEWAY_AUTH__KEYS_FILE= (empty) must read as "not set", not as the directory ".".
        return None if value == "" else value


class LimitSettings(BaseModel):
    """Overload shedding: a bound on in-flight requests per process, REST and gRPC together."""

    max_in_flight: int = 256
    """Beyond this many in-flight API requests new ones get 503 / RESOURCE_EXHAUSTED at once
    (health endpoints are never shed); 0 = no bound."""
    retry_after_s: int = 1
    """Retry-After sent with a shed request."""


class RateLimitSettings(BaseModel):
    """Per-client token buckets in Redis, shared by every replica (gateway/ratelimit.py)."""

    default_per_s: float = 0.0
    """Tokens per second for keys that declare no rate_limit; 0 = unlimited (no Redis call)."""
    default_burst: int = 0
    """Bucket size for those keys; 0 = one second's worth (at least 1)."""
    timeout_s: float = 0.1
    """Bound on the limiter's Redis round trip; on any Redis error the limiter fails open."""
    fail_open_s: float = 1.0
    """After a Redis error, requests pass unchecked for this long before Redis is tried again."""


class Settings(BaseSettings):
    """Everything the gateway process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    spec_path: Path = Path("config/models.yaml")
    """Model spec (YAML) listing every served model."""
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 50051
    """gRPC port, served by the same process and event loop as HTTP (bound on ``http_host``)."""
    grpc_max_message_bytes: int = 4 * 1024 * 1024
    """gRPC send/receive limit per message (a full batch request is far smaller)."""
    grpc_max_concurrent_rpcs: int = 1024
    """Backstop on all gRPC calls (health included); beyond it RESOURCE_EXHAUSTED. API calls
    are shed earlier by ``limits.max_in_flight``, shared with REST."""
    grpc_health_interval_s: float = 1.0
    """How often the gRPC health service re-runs the ``/readyz`` checks."""
    grpc_grace_s: float = 5.0
    """On shutdown, how long in-flight gRPC calls may finish before they are cancelled."""
    workers: int = 1
    """uvicorn worker processes; one per core is the usual choice."""
    log_level: str = "warning"
    slow_request_s: float = 0.5
    """API requests slower than this get one WARNING log line each (no per-request INFO)."""
    tick_batching: bool = True
    """Requests ready in the same event-loop iteration share one Redis lookup pipeline, one
    Triton call and one write-back pipeline per model (gateway/microbatch.py). Off: one of
    each per request (the benchmark's baseline), and the windows below do nothing."""
    infer_window_ms: float = Field(default=2.0, ge=0.0, le=100.0)
    """While a Triton call of a model is in flight (in this worker), its new misses wait for
    that call to end, but at most this long (and never more than half of what their deadline
    leaves), and then share the next call; with no call out a miss goes at once. 0: share
    only within one event-loop iteration."""
    write_back_window_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    """The same for write-backs of computed predictions; they are made after the answer, so
    the wait only delays when other requests and replicas see the prediction cached."""
    gc_freeze: bool = True
    """Once start-up is done, collect and freeze the heap it left (gateway/heap.py), so that
    no full garbage collection later walks it while requests wait. Off: Python's defaults."""
    max_body_bytes: int = 1_048_576
    """Largest accepted request body; larger ones get 413 before parsing."""
    shutdown_grace_s: int = 10
    """On SIGTERM: how long in-flight HTTP requests may finish before they are cancelled
    (then gRPC gets ``grpc_grace_s``); the pod's terminationGracePeriodSeconds must cover
    preStop + both."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    """The event-driven lane's worker (``stream-worker``); see docs/stream-lane.md."""
