"""The batch scoring job: read chunks, score them through Triton, commit them to Redis.

One event loop overlaps the three stages across chunks: at most ``concurrency`` Triton calls
are in flight (a semaphore) and at most ``2 * concurrency`` chunks are between reading and
committing (a second one), so reading the next chunks and committing the previous ones
happen while Triton computes. Memory stays bounded by the window, whatever the input size.

Each chunk is committed once (``store.BatchStore.commit_chunk``): its predictions, its done
bit and the counters in one atomic call. A dependency error (Triton or Redis) retries the
chunk ``retries`` times with exponential backoff; then the chunk is recorded as failed, the
job goes on, and the next run retries it. Invalid input rows are committed as invalid with
their reason and never reach Triton.

Feature freshness, as on the online path (``PredictionService.predict``): when the model's
``feature_freshness`` has a ``max_age_s``, an entity whose features' as-of time
(``features_at``) is more than that before the moment its chunk is scored has old features.
With ``on_violation: reject`` it is not scored (the API would answer 422 for it) and is
counted as ``stale``: a policy outcome, committed with the chunk like an invalid row, not a
failure to retry. With ``flag`` it is scored and written as usual (the API serves it
flagged ``old_features``). An entity without an as-of time is never too old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import orjson

from gateway.batch.checkpoint import (
    CheckpointState,
    FailedChunk,
    Failure,
    JobConfig,
    JobKeys,
    chunk_bounds,
    chunk_count,
    default_job_id,
)
from gateway.batch.errors import BatchError
from gateway.batch.options import JobOptions
from gateway.batch.progress import Progress
from gateway.batch.report import SHOWN_FAILURES, Outcome, Summary
from gateway.batch.sources import (
    FEATURE_STORE,
    Chunk,
    FeatureStoreSource,
    FileSource,
    Source,
    feature_store_identity,
)
from gateway.batch.store import BatchStore
from gateway.cache import prediction_key
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.spec import ModelSpec, load_specs
from gateway.startup import verify_models
from gateway.store import open_redis
from gateway.triton import TritonClient

log = logging.getLogger(__name__)

SAMPLES_PER_CHUNK = 5
"""Invalid entities of one chunk kept with their reason in the checkpoint."""
_MAX_BACKOFF_S = 5.0


async def run_batch_job(
    settings: Settings,
    options: JobOptions,
    *,
    stop: asyncio.Event | None = None,
    progress_stream: TextIO | None = None,
) -> Summary:
    """Run (or resume) one shard of a job; ``stop`` ends it early, cleanly, when set."""
    options.check()
    specs = load_specs(settings.spec_path)
    spec = specs.get(options.model)
    if spec is None:
        raise BatchError(f"model {options.model!r} is not in {settings.spec_path}")
    file_source = (
        None
        if options.source == FEATURE_STORE
        else FileSource(Path(options.source), spec, options.shard, options.batch_size)
    )
    redis_settings = settings.redis.model_copy(
        update={
            "socket_timeout_s": options.redis_timeout_s,
            # the feature reads of every chunk in the window, plus commits
            "max_connections": 4 * options.concurrency + 8,
        }
    )
    triton_settings = settings.triton.model_copy(update={"timeout_s": options.triton_timeout_s})
    async with open_redis(redis_settings) as client, TritonClient(triton_settings) as triton:
        version = (
            await verify_models(
                {spec.name: spec},
                triton,
                url=triton_settings.url,
                wait_s=triton_settings.startup_wait_s,
            )
        )[spec.name]
        metadata = await triton.model_metadata(spec.triton_name, version)
        triton_max = int(metadata["config"].get("max_batch_size", 0))
        if options.batch_size > triton_max:
            raise BatchError(
                f"--batch-size {options.batch_size} exceeds Triton's max_batch_size "
                f"{triton_max} for {spec.triton_name!r}"
            )
        identity = (
            file_source.identity if file_source else feature_store_identity(spec.entity_namespace)
        )
        job_id = options.job_id or default_job_id(spec.name, version, identity)
        store = BatchStore(
            client, JobKeys.of(job_id, options.shard), state_ttl_s=options.state_ttl_s
        )
        source: Source = file_source or FeatureStoreSource(
            store, spec, options.shard, options.batch_size
        )
        job = _Job(
            spec=spec,
            version=version,
            options=options,
            job_id=job_id,
            store=store,
            source=source,
            triton=triton,
            stop=stop or asyncio.Event(),
            progress_stream=progress_stream,
        )
        return await job.run(identity)


class _Job:
    def __init__(
        self,
        *,
        spec: ModelSpec,
        version: str,
        options: JobOptions,
        job_id: str,
        store: BatchStore,
        source: Source,
        triton: TritonClient,
        stop: asyncio.Event,
        progress_stream: TextIO | None,
    ) -> None:
        self.spec = spec
        self.version = version
        self.options = options
        self.job_id = job_id
        self.store = store
        self.source = source
        self.triton = triton
        self.stop = stop
        self.token = uuid.uuid4().hex
        self._infer_slots = asyncio.Semaphore(options.concurrency)
        self.scored = self.invalid = self.stale = self.failed = 0
        self._key_prefix = prediction_key(spec.name, version, "")
        policy = spec.policy
        self._reject_older_than_s = (
            policy.max_feature_age_s if policy.on_old_features == "reject" else None
        )
        self.prepare_s = 0.0
        self._progress = Progress(
            f"{spec.name} {options.shard}",
            stream=progress_stream,
            mode=options.progress,
            interval_s=options.progress_interval_s,
        )

    async def run(self, identity: str) -> Summary:
        started = time.monotonic()
        options = self.options
        if options.restart:
            await self.store.discard()
        config = JobConfig(
            model=self.spec.name,
            version=self.version,
            source=identity,
            shard=str(options.shard),
            batch_size=options.batch_size,
        )
        state = await self.store.open(self.job_id, config, self.token)
        if state.complete:
            return self._summary(state, state, "nothing-to-do", time.monotonic() - started)
        prepare_started = time.monotonic()
        await self.source.prepare(state, self.token, self._progress.note)
        self.prepare_s = time.monotonic() - prepare_started
        total = self.source.total
        if state.total is None:
            await self.store.set_total(total)
        n_chunks = chunk_count(total, options.batch_size)
        done = state.done_chunks(n_chunks)
        pending = [k for k in range(n_chunks) if not done[k]]
        skipped = state.scored + state.invalid + state.stale
        self._progress.begin(total, done=skipped)
        await self._run_chunks(pending)
        self._progress.close()

        after = await self.store.read_state()
        all_done = bool(after.done_chunks(n_chunks).all())
        complete = all_done and not after.failed
        if complete:
            await self.store.finish(
                self.token, complete=True, drop_snapshot=isinstance(self.source, FeatureStoreSource)
            )
        outcome: Outcome = (
            "complete" if complete else "interrupted" if self.stop.is_set() else "incomplete"
        )
        after.total = total
        return self._summary(state, after, outcome, time.monotonic() - started)

    async def _run_chunks(self, pending: list[int]) -> None:
        window = asyncio.Semaphore(2 * self.options.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for index in pending:
                    await window.acquire()
                    if self.stop.is_set():
                        window.release()
                        break
                    group.create_task(self._process(index, window))
        except BaseExceptionGroup as errors:
            # Fenced out, a lost snapshot, or a bug: the group cancelled the other chunks
            # (their commits are atomic, so nothing is half-written); report the first.
            raise errors.exceptions[0] from None

    async def _process(self, index: int, window: asyncio.Semaphore) -> None:
        options = self.options
        chunk: Chunk | None = None
        error: GatewayError | None = None
        try:
            for attempt in range(options.retries + 1):
                if attempt:
                    backoff = options.retry_backoff_s * 2 ** (attempt - 1)
                    await asyncio.sleep(min(backoff, _MAX_BACKOFF_S))
                try:
                    chunk = await self.source.read_chunk(index)
                    await self._score_and_commit(chunk)
                    return
                except GatewayError as e:  # Triton or Redis, already translated
                    error = e
            assert error is not None
            await self._record_failure(index, chunk, error)
        finally:
            window.release()

    async def _score_and_commit(self, chunk: Chunk) -> None:
        spec, version = self.spec, self.version
        scoring = chunk.valid
        stale = 0
        if self._reject_older_than_s is not None:
            old = chunk.valid & features_too_old(
                chunk.features_at, time.time(), self._reject_older_than_s
            )
            stale = int(old.sum())
            scoring = chunk.valid & ~old
        positions = np.flatnonzero(scoring)
        ids: list[bytes] = []
        records: list[bytes] = []
        if len(positions):
            everything = len(positions) == len(chunk)
            rows = chunk.matrix if everything else chunk.matrix[positions]
            async with self._infer_slots:
                result = await self.triton.infer(spec, version, np.ascontiguousarray(rows))
            features_at = chunk.features_at if everything else chunk.features_at[positions]
            records = encode_records(result.scores.tolist(), version, time.time(), features_at)
            if chunk.raw_ids is not None:
                raw = chunk.raw_ids
                ids = raw if everything else [raw[p] for p in positions.tolist()]
            else:
                text = chunk.entity_ids
                ids = [text[p].encode(errors="surrogateescape") for p in positions.tolist()]
        samples = [
            Failure(chunk.entity_ids[p], reason)
            for p, reason in sorted(chunk.reasons.items())[:SAMPLES_PER_CHUNK]
        ]
        await self.store.commit_chunk(
            self.token,
            chunk.index,
            ids,
            records,
            key_prefix=self._key_prefix,
            prediction_ttl_s=spec.cache_ttl_s,
            invalid=len(chunk.reasons),
            stale=stale,
            samples=samples,
        )
        # Also when the commit was already applied by an attempt whose reply was lost.
        self.scored += len(records)
        self.invalid += len(chunk.reasons)
        self.stale += stale
        self._progress.advance(len(chunk), failed=len(chunk.reasons))

    async def _record_failure(self, index: int, chunk: Chunk | None, error: GatewayError) -> None:
        start, stop = chunk_bounds(index, self.source.total, self.options.batch_size)
        entities = stop - start
        sample = tuple(chunk.entity_ids[:SAMPLES_PER_CHUNK]) if chunk is not None else ()
        reason = f"{type(error).__name__}: {error.detail}"
        log.warning(
            "chunk failed after retries",
            extra={"chunk": index, "entities": entities, "reason": reason},
        )
        # If even that fails, the chunk is simply not done, and the next run retries it.
        with contextlib.suppress(GatewayError):
            await self.store.mark_failed(self.token, index, FailedChunk(entities, reason, sample))
        self.failed += entities
        self._progress.advance(entities, failed=entities)

    def _summary(
        self, before: CheckpointState, after: CheckpointState, outcome: Outcome, elapsed_s: float
    ) -> Summary:
        failures = list(after.samples[:SHOWN_FAILURES])
        for index, chunk in sorted(after.failed.items()):
            names = chunk.sample or (f"chunk {index} ({chunk.entities} entities)",)
            failures += [Failure(name, chunk.reason) for name in names]
        return Summary(
            job_id=self.job_id,
            model=self.spec.name,
            version=self.version,
            source=self.options.source,
            shard=str(self.options.shard),
            outcome=outcome,
            entities=after.total or 0,
            scored=self.scored,
            skipped=before.scored + before.invalid + before.stale,
            invalid=self.invalid,
            stale=self.stale,
            failed=self.failed,
            elapsed_s=elapsed_s,
            prepare_s=self.prepare_s,
            job_scored=after.scored,
            job_invalid=after.invalid,
            job_stale=after.stale,
            job_failed=after.failed_entities,
            failures=failures[: SHOWN_FAILURES * 2],
            snapshot=self.source.snapshot_mode
            if isinstance(self.source, FeatureStoreSource)
            else None,
        )


def features_too_old(
    features_at: npt.NDArray[np.float64], now: float, max_age_s: float
) -> npt.NDArray[np.bool_]:
    """Rows whose features are more than ``max_age_s`` old at ``now``: the online path's
    ``feature_age_s > max_age_s``. An unknown as-of time (NaN) is never too old."""
    with np.errstate(invalid="ignore"):
        old: npt.NDArray[np.bool_] = (now - features_at) > max_age_s
    return old


def encode_records(
    scores: list[list[float]],
    version: str,
    scored_at: float,
    features_at: npt.NDArray[np.float64],
) -> list[bytes]:
    """``CachedPrediction(scores, version, scored_at, features_at).encode()`` per row, without
    building an object per entity (byte for byte the same: tests/unit/test_batch_records.py).
    A NaN as-of time is ``None``, as the online path stores an unknown one."""
    dumps = orjson.dumps
    return [
        dumps({"s": row, "v": version, "t": scored_at, "f": None if at != at else at})
        for row, at in zip(scores, features_at.tolist(), strict=True)
    ]
