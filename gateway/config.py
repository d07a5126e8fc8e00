"""Gateway settings, read from the environment (prefix ``GATEWAY_``, nested with ``__``).

Settings are built explicitly by the CLI or the tests (``Settings()``), never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RedisSettings(BaseModel):
    """Connection to the Redis that holds online features and cached predictions."""

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL without credentials (``redis://host:port/db``)."""
    password: SecretStr | None = None
    """Password, if any. Prefer ``password_file`` in deployments."""
    password_file: Path | None = None
    """File holding the password (a mounted Secret); read once at start-up."""
    socket_timeout_s: float = 0.25
    """Upper bound of one Redis round trip; a slower Redis is treated as unavailable."""
    connect_timeout_s: float = 0.5
    """Upper bound for opening a connection."""
    max_connections: int = 64
    """Connection pool size per process."""

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
    """In-flight gRPC calls per process; beyond it new calls get RESOURCE_EXHAUSTED."""
    grpc_health_interval_s: float = 1.0
    """How often the gRPC health service re-runs the ``/readyz`` checks."""
    grpc_grace_s: float = 5.0
    """On shutdown, how long in-flight gRPC calls may finish before they are cancelled."""
    workers: int = 1
    """uvicorn worker processes; one per core is the usual choice."""
    log_level: str = "warning"
    max_body_bytes: int = 1_048_576
    """Largest accepted request body; larger ones get 413 before parsing."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
