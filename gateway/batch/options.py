"""What a batch job is asked to do (the command line's flags, typed)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.batch.checkpoint import check_job_id
from gateway.batch.errors import BatchError
from gateway.batch.progress import ProgressMode
from gateway.batch.sharding import ALL, Shard


@dataclass(frozen=True, slots=True)
class JobOptions:
    model: str
    source: str
    """``feature-store``, or the path of a ``.csv`` / ``.parquet`` file."""
    shard: Shard = ALL
    batch_size: int = 1024
    concurrency: int = 4
    """Triton calls in flight."""
    job_id: str | None = None
    """Default: derived from model, served version and source identity."""
    restart: bool = False
    retries: int = 3
    retry_backoff_s: float = 0.2
    triton_timeout_s: float = 10.0
    redis_timeout_s: float = 5.0
    state_ttl_s: int = 7 * 86_400
    """How long a checkpoint outlives its last write."""
    progress: ProgressMode = "auto"
    progress_interval_s: float = 5.0

    def check(self) -> None:
        for name in ("batch_size", "concurrency", "state_ttl_s"):
            if getattr(self, name) < 1:
                raise BatchError(f"--{name.replace('_', '-')} must be at least 1")
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise BatchError("--retries and --retry-backoff-s must not be negative")
        if self.job_id is not None:
            try:
                check_job_id(self.job_id)
            except ValueError as e:
                raise BatchError(str(e)) from e
