"""Settings of the stream worker: ``GATEWAY_STREAM__*`` (nested under ``gateway.config.Settings``).

The defaults for the micro-batch thresholds come from ``python -m benchmarks.stream``; the
measured table and the reasoning are in docs/stream-lane.md.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class StreamSettings(BaseModel):
    """The event-driven lane: which streams, how to batch, how to recover."""

    stream: str = "gw:s:events"
    """Input stream of business events (one entry per event; format in docs/stream-lane.md)."""
    group: str = "scorers"
    """Consumer group shared by every worker; created (from the stream's start) if missing."""
    consumer: str = ""
    """This worker's consumer name; empty: ``<hostname>-<pid>`` (the chart sets the pod name)."""
    output_stream: str = "gw:s:predictions"
    """Where each scored event is published, exactly once per event id."""
    dead_letter_stream: str = "gw:s:dead"
    """Where poison events go, with the reason."""
    batch_max_size: int = Field(default=256, ge=1, le=4096)
    """A micro-batch is scored as soon as it holds this many events ..."""
    batch_max_wait_ms: float = Field(default=5.0, ge=0.0, le=60_000.0)
    """... or this long after its first event was read, whichever comes first."""
    max_in_flight: int = Field(default=1024, ge=1)
    """Events read (or reclaimed) but not yet acknowledged by this worker. When full, the worker
    stops reading: the backlog stays in Redis (consumer lag), where KEDA sees it."""
    block_ms: int = Field(default=500, ge=1, le=60_000)
    """Longest XREADGROUP block while no batch is open (also bounds how fast SIGTERM is seen)."""
    claim_idle_ms: int = Field(default=30_000, ge=100)
    """An entry pending this long is presumed orphaned (its worker died) and is reclaimed with
    XAUTOCLAIM. Must exceed the longest time a healthy worker holds an entry."""
    claim_interval_s: float = Field(default=5.0, gt=0)
    """How often a worker looks for orphaned entries."""
    max_attempts: int = Field(default=5, ge=1)
    """Deliveries after which an entry that keeps failing goes to the dead-letter stream."""
    dedupe_ttl_s: int = Field(default=600, ge=1)
    """How long an explicit ``event_id`` is remembered, so a producer's retry (the same event
    appended twice) is published once. Redeliveries of one entry need no marker."""
    output_maxlen: int = Field(default=100_000, ge=1)
    """Approximate cap (``MAXLEN ~``) of the output stream."""
    dead_letter_maxlen: int = Field(default=100_000, ge=1)
    """Approximate cap (``MAXLEN ~``) of the dead-letter stream."""
    input_maxlen: int = Field(default=1_000_000, ge=1)
    """Approximate cap producers apply to the input stream (``stream-produce`` uses it). Entries
    trimmed before a worker acknowledged them are lost: size it above the largest backlog."""
    retry_backoff_max_s: float = Field(default=5.0, gt=0)
    """Upper bound of the backoff while Triton or Redis is unavailable (the batch is held)."""
    drain_timeout_s: float = Field(default=20.0, gt=0)
    """On SIGTERM, how long in-flight batches may take to finish and acknowledge."""
    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often the consumer-lag and pending gauges are refreshed."""
    consumer_idle_delete_s: float = Field(default=3600.0, gt=0)
    """Consumers of crashed workers (nothing pending, idle this long) are removed from the group."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Prometheus metrics HTTP port of the worker; 0 = off."""

    @model_validator(mode="after")
    def _window_holds_a_batch(self) -> StreamSettings:
        if self.max_in_flight < self.batch_max_size:
            raise ValueError(
                f"max_in_flight ({self.max_in_flight}) must be >= batch_max_size "
                f"({self.batch_max_size}): a full batch must fit in the window"
            )
        return self
