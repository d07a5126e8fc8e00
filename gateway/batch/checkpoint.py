"""Checkpoint layout and state of a batch job; pure logic, the Redis I/O is ``store.py``.

Everything a job remembers lives in Redis under ``gw:batch:<job id>:<i>-of-<n>:*``:

``meta``     hash: the configuration that fixes the chunks (model, version, source, shard,
             batch size), ``created_at`` (the job's start time; a file without an
             ``event_time`` column uses it as the features' as-of time on every resume) and
             ``status`` (``running`` | ``complete``).
``owner``    the token of the process that currently runs the job (fencing, see below).
``done``     bitmap, bit k set = chunk k committed.
``counts``   hash ``scored`` / ``invalid`` / ``stale`` / ``chunks``: entities written, entities
             rejected as invalid input, entities not scored because their features were older
             than the model's ``feature_freshness`` allows (``on_violation: reject``), chunks
             committed.
``failed``   hash chunk → record of a chunk that failed on a dependency after its retries;
             it is retried by the next run and leaves this hash when it commits.
``samples``  list of invalid entities with their reason (the first 100).
``ids``      list, feature-store source only: the shard's entity ids in snapshot order (id
             order from the namespace's id index, else the order SCAN first returned them;
             chunk k is positions [k*B, (k+1)*B) of it).
``seen``     set, SCAN snapshot only: the same ids, to add each to ``ids`` only once.
``scan``     hash, feature-store source only: how the snapshot is taken (``mode`` ``index`` |
             ``scan``), where it continues from (``cursor``: the last id read from the index,
             or the SCAN cursor) and whether it is ``complete``.

Exactly once: a chunk's predictions, its ``done`` bit and the counters are written by ONE
atomic Redis script (``store.py``), so after a crash a chunk is either fully written and
recorded or not at all, and the counters equal the entities of the committed chunks. The
script first checks the ``owner`` token: a job id is run by one process at a time; a newer
process taking the job over makes every later commit of the older one fail (``JobFenced``).
It also checks the ``done`` bit, so a commit retried after a lost reply is not applied twice.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import orjson

from gateway.batch.errors import CheckpointMismatch
from gateway.batch.sharding import Shard

SnapshotMode = Literal["index", "scan"]
KEY_PREFIX = "gw:batch"
SAMPLE_LIMIT = 100
"""Invalid entities kept with their reason (per job and shard)."""
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


def default_job_id(model: str, version: str, source_identity: str) -> str:
    """Same model version, same input (path + size + mtime, or the feature store): same job,
    so a rerun resumes. A new model version or a changed file starts a new job."""
    digest = hashlib.sha256(source_identity.encode()).hexdigest()[:12]
    return f"{model}-v{version}-{digest}"


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(
            f"job id must be 1-200 characters of letters, digits and . _ : -, got {job_id!r}"
        )
    return job_id


@dataclass(frozen=True, slots=True)
class JobKeys:
    prefix: str

    @classmethod
    def of(cls, job_id: str, shard: Shard) -> JobKeys:
        return cls(f"{KEY_PREFIX}:{job_id}:{shard.index}-of-{shard.count}")

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def owner(self) -> str:
        return f"{self.prefix}:owner"

    @property
    def done(self) -> str:
        return f"{self.prefix}:done"

    @property
    def counts(self) -> str:
        return f"{self.prefix}:counts"

    @property
    def failed(self) -> str:
        return f"{self.prefix}:failed"

    @property
    def samples(self) -> str:
        return f"{self.prefix}:samples"

    @property
    def ids(self) -> str:
        return f"{self.prefix}:ids"

    @property
    def seen(self) -> str:
        return f"{self.prefix}:seen"

    @property
    def scan(self) -> str:
        return f"{self.prefix}:scan"

    def all(self) -> list[str]:
        return [
            self.meta,
            self.owner,
            self.done,
            self.counts,
            self.failed,
            self.samples,
            self.ids,
            self.seen,
            self.scan,
        ]


@dataclass(frozen=True, slots=True)
class JobConfig:
    """What fixes the chunks: resuming with anything else would mix different chunkings."""

    model: str
    version: str
    source: str
    shard: str
    batch_size: int

    def as_meta(self) -> dict[str, str]:
        return {
            "model": self.model,
            "version": self.version,
            "source": self.source,
            "shard": self.shard,
            "batch_size": str(self.batch_size),
        }

    def check_resumable(self, job_id: str, meta: Mapping[str, str]) -> None:
        mine = self.as_meta()
        differs = [k for k, v in mine.items() if meta.get(k) != v]
        if differs:
            detail = ", ".join(f"{k}: {meta.get(k)!r} there, {mine[k]!r} now" for k in differs)
            raise CheckpointMismatch(
                f"job {job_id!r} (shard {self.shard}) was started with a different "
                f"configuration ({detail}); rerun with the same flags, another --job-id, or "
                "--restart to discard its checkpoint"
            )


@dataclass(frozen=True, slots=True)
class Failure:
    """An entity that was not scored, and why (``entity`` is ``row N`` for a bad id)."""

    entity: str
    reason: str

    def encode(self) -> bytes:
        return orjson.dumps({"entity": self.entity, "reason": self.reason})

    @classmethod
    def decode(cls, raw: bytes) -> Failure:
        body = orjson.loads(raw)
        return cls(entity=str(body["entity"]), reason=str(body["reason"]))


@dataclass(frozen=True, slots=True)
class FailedChunk:
    """A chunk that failed on a dependency (Triton, Redis) after its retries."""

    entities: int
    reason: str
    sample: tuple[str, ...]

    def encode(self) -> bytes:
        return orjson.dumps(
            {"entities": self.entities, "reason": self.reason, "sample": list(self.sample)}
        )

    @classmethod
    def decode(cls, raw: bytes) -> FailedChunk:
        body = orjson.loads(raw)
        return cls(
            entities=int(body["entities"]),
            reason=str(body["reason"]),
            sample=tuple(str(s) for s in body["sample"]),
        )


@dataclass(slots=True)
class CheckpointState:
    """What a job's checkpoint holds when a run starts (or after it)."""

    created_at: float
    status: str = "running"
    done_bitmap: bytes = b""
    scored: int = 0
    invalid: int = 0
    stale: int = 0
    chunks_done: int = 0
    failed: dict[int, FailedChunk] = field(default_factory=dict)
    samples: list[Failure] = field(default_factory=list)
    snapshot_mode: SnapshotMode | None = None
    """None: no snapshot page saved yet (or a file source)."""
    snapshot_cursor: bytes = b""
    """The last id read from the index, or the SCAN cursor (decimal), per ``snapshot_mode``."""
    snapshot_complete: bool = False
    total: int | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def failed_entities(self) -> int:
        return sum(chunk.entities for chunk in self.failed.values())

    def done_chunks(self, n_chunks: int) -> npt.NDArray[np.bool_]:
        return decode_done(self.done_bitmap, n_chunks)


def decode_done(bitmap: bytes, n_chunks: int) -> npt.NDArray[np.bool_]:
    """Redis bitmaps number bits from the most significant bit of byte 0 (SETBIT k)."""
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8))[:n_chunks].astype(bool)
    if len(bits) < n_chunks:
        bits = np.concatenate([bits, np.zeros(n_chunks - len(bits), dtype=bool)])
    return bits


def chunk_count(total: int, batch_size: int) -> int:
    return -(-total // batch_size)


def chunk_bounds(index: int, total: int, batch_size: int) -> tuple[int, int]:
    """Row positions [start, stop) of chunk ``index`` within the shard's entities."""
    start = index * batch_size
    if not 0 <= start < total:
        raise IndexError(f"chunk {index} is outside {chunk_count(total, batch_size)} chunks")
    return start, min(start + batch_size, total)
