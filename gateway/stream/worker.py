"""The stream worker: read → micro-batch → features → Triton → cache + output → acknowledge.

One asyncio process. The read loop fills micro-batches (``batcher.fill``) while earlier
batches are still being scored: every entry read or reclaimed counts against the in-flight
window (``max_in_flight``) until it is acknowledged, and a full window stops reading, so a
slow Triton leaves the backlog in Redis (consumer lag) instead of in memory.

Failure handling, per batch:
* poison (cannot be parsed, invalid features, missing required feature): dead-lettered at once;
* Redis or Triton unavailable, Triton deadline: the batch is held and retried with backoff,
  its entries kept claimed (no delivery is counted), until it succeeds or the worker stops;
* anything else: the batch is retried entry by entry, so one bad entry cannot fail the rest;
  an entry that still fails stays pending, is redelivered after ``claim_idle_ms`` and is
  dead-lettered once it has been delivered ``max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from gateway.cache import CachedPrediction
from gateway.config import Settings
from gateway.errors import DependencyUnavailable, InferenceTimeout, InvalidRequest, SpecError
from gateway.features import FeatureUpdate
from gateway.spec import ModelSpec, load_specs
from gateway.startup import verify_models
from gateway.store import RedisStore, open_redis
from gateway.stream.batcher import MicroBatcher, fill
from gateway.stream.events import (
    Event,
    Poison,
    StreamEntry,
    classify,
    payload_text,
    reason_of,
)
from gateway.stream.log import EventLog, Record, StreamUnavailable, done_key
from gateway.stream.metrics import StreamMetrics
from gateway.stream.settings import StreamSettings
from gateway.tensor import build_rows
from gateway.triton import TritonClient
from gateway.validation import EntityQuery

log = logging.getLogger(__name__)

OUTPUT_FIELDS = (
    "event_id",
    "entry_id",
    "model",
    "version",
    "entity_id",
    "scores",
    "scored_at",
    "features_at",
    "cached",
)
"""Fields of an output stream entry, in order; the commit script appends ``latency_ms``."""
DEAD_LETTER_FIELDS = ("event_id", "entry_id", "model", "kind", "reason", "attempts", "payload")
_TRANSIENT = (DependencyUnavailable, InferenceTimeout)


@dataclass(frozen=True, slots=True)
class Scored:
    event: Event
    model_version: str
    scores: tuple[float, ...]
    scored_at: float
    features_at: float | None
    cached: bool


class Scorer:
    """Scores events: applies the features they carry, then one Triton call per model."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        versions: Mapping[str, str],
        store: RedisStore,
        triton: TritonClient,
        triton_max_batch: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._specs = specs
        self._versions = versions
        self._store = store
        self._triton = triton
        self._max_batch = triton_max_batch
        self._clock = clock
        namespaces: dict[str, list[tuple[str, str]]] = {}
        for spec in specs.values():
            namespaces.setdefault(spec.entity_namespace, []).append(
                (spec.name, versions[spec.name])
            )
        self._invalidate = namespaces

    async def score(self, events: Sequence[Event]) -> tuple[list[Scored], list[Poison]]:
        by_model: dict[str, list[Event]] = {}
        for event in events:
            by_model.setdefault(event.model, []).append(event)
        results = await asyncio.gather(
            *(self._score_model(self._specs[m], evs) for m, evs in by_model.items())
        )
        scored: list[Scored] = []
        poison: list[Poison] = []
        for model_scored, model_poison in results:
            scored.extend(model_scored)
            poison.extend(model_poison)
        return scored, poison

    async def _score_model(
        self, spec: ModelSpec, events: list[Event]
    ) -> tuple[list[Scored], list[Poison]]:
        version = self._versions[spec.name]
        updates: list[FeatureUpdate] = [e.update for e in events if e.update is not None]
        if updates:
            # Event-time ordered: an update older than the stored features is dropped, and an
            # applied one deletes the entity's cached predictions of every model reading them.
            await self._store.write_features(
                spec.entity_namespace, updates, invalidate=self._invalidate[spec.entity_namespace]
            )
        # Read after the write: values and their event time come from one HMGET, so a cached
        # prediction's features_at is exactly the as-of time of the values it was computed from.
        records = await self._store.lookup(
            spec, version, [e.entity_id for e in events], [False] * len(events)
        )
        stored = [r.stored for r in records]
        items = [EntityQuery(e.entity_id, e.overrides) for e in events]
        poison: list[Poison] = []
        try:
            rows = build_rows(spec, items, stored)
        except InvalidRequest:
            keep: list[int] = []
            for i, event in enumerate(events):
                try:
                    build_rows(spec, [items[i]], [stored[i]])
                    keep.append(i)
                except InvalidRequest as e:
                    poison.append(Poison(event.entry, reason_of(e), "invalid", spec.name))
            events = [events[i] for i in keep]
            records = [records[i] for i in keep]
            if not events:
                return [], poison
            rows = build_rows(spec, [items[i] for i in keep], [stored[i] for i in keep])

        scores, model_version = await self._infer(spec, version, rows)
        scored_at = self._clock()
        scored: list[Scored] = []
        cache: dict[str, CachedPrediction] = {}
        for i, event in enumerate(events):
            features_at = records[i].features_at
            values = tuple(float(s) for s in scores[i])
            # The entity's prediction (what the online path serves) only when this row is
            # exactly its stored features: the event carried none, or its features are the
            # newest stored. A late event's score is published, not cached.
            cacheable = event.update is None or (
                features_at is not None and features_at <= event.event_time
            )
            if cacheable:
                cache[event.entity_id] = CachedPrediction(
                    scores=values,
                    model_version=model_version,
                    scored_at=scored_at,
                    features_at=features_at,
                )
            scored.append(Scored(event, model_version, values, scored_at, features_at, cacheable))
        if cache:
            await self._store.write_predictions(spec, cache.items())
        return scored, poison

    async def _infer(
        self, spec: ModelSpec, version: str, rows: npt.NDArray[np.floating[Any]]
    ) -> tuple[npt.NDArray[np.floating[Any]], str]:
        limit = self._max_batch.get(spec.name, len(rows)) or len(rows)
        if len(rows) <= limit:
            result = await self._triton.infer(spec, version, rows)
            return result.scores, result.model_version
        parts = await asyncio.gather(
            *(
                self._triton.infer(spec, version, rows[start : start + limit])
                for start in range(0, len(rows), limit)
            )
        )
        return np.concatenate([p.scores for p in parts]), parts[0].model_version


class StreamWorker:
    def __init__(
        self,
        settings: StreamSettings,
        event_log: EventLog,
        scorer: Scorer,
        specs: Mapping[str, ModelSpec],
        metrics: StreamMetrics,
    ) -> None:
        self.settings = settings
        self._log = event_log
        self._scorer = scorer
        self._specs = specs
        self._namespace_specs: dict[str, list[ModelSpec]] = {}
        for spec in specs.values():
            self._namespace_specs.setdefault(spec.entity_namespace, []).append(spec)
        self._output_names = {name: [o.name for o in spec.outputs] for name, spec in specs.items()}
        self.metrics = metrics
        self._in_flight = 0
        self._reserved = 0
        self._held_ids: set[str] = set()
        # Recover this consumer's own pending entries before reading new ones: at start-up
        # (a restart under the same name) and after a failed read (its reply may be lost).
        self._recover_own = True
        self._read_backoff = 0.0
        self._space = asyncio.Event()
        self._space.set()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading; batches already read finish and are acknowledged (``run`` returns)."""
        self._stopping.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self) -> None:
        await self._log.ensure_group()
        background = [
            asyncio.create_task(self._claim_loop(), name="stream-claim"),
            asyncio.create_task(self._stats_loop(), name="stream-stats"),
        ]
        try:
            await self._read_loop()
        finally:
            self._stopping.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._drain()
            with contextlib.suppress(Exception):
                await self._log.leave()

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            # Their entries stay pending under this consumer; another worker reclaims them.
            log.warning(
                "stream worker stopped with unfinished batches",
                extra={"batches": len(pending), "in_flight": self._in_flight},
            )
            await asyncio.gather(*pending, return_exceptions=True)

    # -- window ---------------------------------------------------------------------------

    def _free(self) -> int:
        return self.settings.max_in_flight - self._in_flight - self._reserved

    def _reserve(self, count: int) -> int:
        """Slots for a read or claim in progress (held back until its reply is known)."""
        granted = max(0, min(count, self._free()))
        self._reserved += granted
        if self._free() <= 0:
            self._space.clear()
        return granted

    def _settle(self, granted: int, received: int) -> None:
        """A read or claim returned ``received`` entries: they are held, the rest is free."""
        self._reserved -= granted
        self._hold(received)

    def _hold(self, count: int) -> None:
        self._in_flight += count
        if self._free() > 0:
            self._space.set()
        self.metrics.in_flight.set(self._in_flight)

    # -- reading --------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        s = self.settings
        batcher: MicroBatcher[StreamEntry] = MicroBatcher(
            s.batch_max_size, s.batch_max_wait_ms / 1000.0
        )
        while not self._stopping.is_set():
            if self._free() <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._space.wait(), timeout=s.block_ms / 1000.0)
                continue
            if self._recover_own and not len(batcher):
                await self._recover_own_pending()
                continue
            batch = await fill(
                batcher,
                self._read,
                capacity=self._free,
                idle_block_ms=s.block_ms,
                stopping=self._stopping.is_set,
            )
            if batch.items:
                self.metrics.batch_wait.observe(batch.wait_s)
                self._dispatch(batch.items, batch.reason)

    async def _read(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        granted = self._reserve(count)
        if not granted:
            return []
        entries: list[StreamEntry] = []
        try:
            entries = await self._log.read(granted, block_ms)
            self._read_backoff = 0.0
        except StreamUnavailable as e:
            # Redis may have delivered before the reply was lost: look at our own pending
            # entries once it answers again.
            self._recover_own = True
            self._read_backoff = min(max(0.1, self._read_backoff * 2), 2.0)
            log.warning("stream read failed (retry in %.1fs): %s", self._read_backoff, e.detail)
            await self._sleep(self._read_backoff)
        finally:
            self._settle(granted, len(entries))
        self._held_ids.update(e.entry_id for e in entries)
        return entries

    async def _recover_own_pending(self) -> None:
        """Dispatch entries delivered to this consumer that it does not hold (see ``run``)."""
        s = self.settings
        after = "0-0"
        while not self._stopping.is_set():
            granted = self._reserve(min(self._free(), s.batch_max_size))
            if not granted:
                return  # the window is full; try again once it drains
            try:
                found = await self._log.read_own_pending(after, granted)
            except Exception as e:
                self._settle(granted, 0)
                log.warning(
                    "recovering own pending entries failed: %s", getattr(e, "detail", repr(e))
                )
                await self._sleep(1.0)
                return
            fresh = [e for e in found.entries if e.entry_id not in self._held_ids]
            self._settle(granted, len(fresh))
            self._held_ids.update(e.entry_id for e in fresh)
            self._count_trimmed(found.deleted)
            if fresh:
                log.info("recovered %d entries delivered to this consumer", len(fresh))
                self._dispatch(fresh, "recover")
            if found.cursor == "0-0":
                break
            after = found.cursor
        self._recover_own = False

    def _count_trimmed(self, deleted: Sequence[str]) -> None:
        if deleted:
            self.metrics.trimmed.inc(len(deleted))
            log.error(
                "pending entries were trimmed from the input stream before they were "
                "processed (events lost: raise the producers' MAXLEN)",
                extra={"count": len(deleted), "stream": self._log.stream},
            )

    async def _claim_loop(self) -> None:
        """Take over entries whose worker died (pending longer than ``claim_idle_ms``)."""
        s = self.settings
        cursor = "0-0"
        while not self._stopping.is_set():
            await self._sleep(s.claim_interval_s)
            # Sweep the whole pending list once per interval, a window's worth at a time.
            while not self._stopping.is_set():
                granted = self._reserve(min(self._free(), s.batch_max_size))
                if not granted:
                    break
                try:
                    reclaimed = await self._log.reclaim(
                        cursor, min_idle_ms=s.claim_idle_ms, count=granted
                    )
                except Exception as e:  # the loop must outlive any one failure
                    self._settle(granted, 0)
                    log.warning("reclaim failed: %s", getattr(e, "detail", repr(e)))
                    break
                # An entry this worker is still working on may look idle too: not twice.
                fresh = [e for e in reclaimed.entries if e.entry_id not in self._held_ids]
                self._settle(granted, len(fresh))
                self._held_ids.update(e.entry_id for e in fresh)
                cursor = reclaimed.cursor
                self._count_trimmed(reclaimed.deleted)
                if fresh:
                    self.metrics.reclaimed.inc(len(fresh))
                    log.info("reclaimed %d orphaned entries", len(fresh))
                    self._dispatch(fresh, "reclaim")
                if cursor == "0-0":
                    break

    async def _stats_loop(self) -> None:
        s = self.settings
        last_prune = time.monotonic()
        while not self._stopping.is_set():
            try:
                stats = await self._log.stats()
                if stats is not None:
                    self.metrics.pending.set(stats.pending)
                    self.metrics.stream_length.set(stats.length)
                    if stats.lag is not None:
                        self.metrics.lag.set(stats.lag)
                if time.monotonic() - last_prune >= min(60.0, s.consumer_idle_delete_s):
                    last_prune = time.monotonic()
                    removed = await self._log.prune_consumers(
                        idle_ms=int(s.consumer_idle_delete_s * 1000)
                    )
                    if removed:
                        log.info("removed idle consumers %s", removed)
            except Exception as e:  # a gauge is not worth stopping the loop for
                log.warning("stream stats failed: %s", getattr(e, "detail", repr(e)))
            await self._sleep(s.lag_interval_s)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when the worker is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    # -- processing -----------------------------------------------------------------------

    def _dispatch(self, entries: list[StreamEntry], reason: str) -> None:
        """Process a batch in the background; its window slots are released when it ends."""
        self.metrics.batch_size.observe(len(entries))
        self.metrics.batch_close.labels(reason).inc()
        task = asyncio.create_task(self._process(entries))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._held_ids.difference_update(e.entry_id for e in entries)
            self._hold(-len(entries))

        task.add_done_callback(done)

    async def _process(self, entries: list[StreamEntry]) -> None:
        started = time.perf_counter()
        events: list[Event] = []
        poison: list[Poison] = []
        try:
            events, poison = classify(
                entries,
                self._specs,
                self._namespace_specs,
                now=time.time(),
                max_attempts=self.settings.max_attempts,
            )
            await self._score_and_commit(events, poison)
        except asyncio.CancelledError:
            raise
        except Exception:
            if len(events) + len(poison) <= 1:  # alone, or classify itself failed
                self._failed(entries)
                return
            # Isolate: the poison first (nothing to score), then each event on its own.
            log.warning("batch of %d failed; retrying entry by entry", len(entries), exc_info=True)
            with contextlib.suppress(Exception):
                await self._score_and_commit([], poison)
            for event in events:
                try:
                    await self._score_and_commit([event], [])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._failed([event.entry])
        finally:
            self.metrics.batch_seconds.observe(time.perf_counter() - started)

    def _failed(self, entries: Sequence[StreamEntry]) -> None:
        self.metrics.failures.inc(len(entries))
        log.exception(
            "processing failed; left pending for redelivery",
            extra={"entries": [e.entry_id for e in entries][:10]},
        )

    async def _score_and_commit(self, events: list[Event], poison: list[Poison]) -> None:
        """Score and publish; holds the batch through outages of Redis or Triton."""
        backoff = 0.1
        ids = [e.entry.entry_id for e in events] + [p.entry.entry_id for p in poison]
        while True:
            try:
                scored, more_poison = await self._scorer.score(events) if events else ([], [])
                await self._commit(scored, [*poison, *more_poison])
                return
            except _TRANSIENT as e:
                dependency = "redis" if isinstance(e, StreamUnavailable) else type(e).__name__
                self.metrics.retries.labels(dependency).inc()
                log.warning("batch held, retrying in %.1fs: %s", backoff, e.detail)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
                with contextlib.suppress(StreamUnavailable):
                    await self._log.heartbeat(ids)

    async def _commit(self, scored: list[Scored], poison: list[Poison]) -> None:
        s = self.settings
        group = self._log.group
        outputs = [
            Record(
                entry_id=item.event.entry.entry_id,
                marker=done_key(group, item.event.event_id) if item.event.explicit_id else "",
                values=_output_values(item, self._output_names[item.event.model]),
            )
            for item in scored
        ]
        dead = [
            Record(entry_id=p.entry.entry_id, marker="", values=_dead_letter_values(p))
            for p in poison
        ]
        published, dead_lettered = await self._log.commit(
            output=(s.output_stream, s.output_maxlen, OUTPUT_FIELDS, outputs),
            dead_letters=(s.dead_letter_stream, s.dead_letter_maxlen, DEAD_LETTER_FIELDS, dead),
            marker_ttl_s=s.dedupe_ttl_s,
        )
        m = self.metrics
        m.events.labels("scored").inc(published.published)
        m.events.labels("duplicate").inc(published.acknowledged - published.published)
        m.events.labels("dead_lettered").inc(dead_lettered.published)
        for p in poison:
            m.dead_letters.labels(p.kind).inc()
        for latency_ms in published.latencies_ms:
            m.latency.observe(latency_ms / 1000.0)


def _output_values(item: Scored, names: Sequence[str]) -> list[str | bytes]:
    event = item.event
    return [
        event.event_id,
        event.entry.entry_id,
        event.model,
        item.model_version,
        event.entity_id,
        orjson.dumps(dict(zip(names, item.scores, strict=True))),
        repr(item.scored_at),
        "" if item.features_at is None else repr(item.features_at),
        "1" if item.cached else "0",
    ]


def _dead_letter_values(poison: Poison) -> list[str | bytes]:
    raw_id = poison.entry.fields.get(b"event_id")
    event_id = raw_id[:128].decode("utf-8", "replace") if raw_id else poison.entry.entry_id
    return [
        event_id,
        poison.entry.entry_id,
        poison.model,
        poison.kind,
        poison.reason,
        str(poison.entry.deliveries),
        payload_text(poison.entry.fields),
    ]


# -- process entry point ---------------------------------------------------------------------


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings) -> int:
    """Run one worker until SIGTERM/SIGINT; 0 after a clean drain, 1 if start-up failed."""
    s = settings.stream
    consumer = s.consumer or default_consumer()
    try:
        specs = load_specs(settings.spec_path)
    except SpecError as e:
        log.error("%s", e)
        return 1
    metrics = StreamMetrics()
    http = None
    if s.metrics_port:
        from prometheus_client import start_http_server

        from gateway.stream.metrics import exposition

        http, _ = start_http_server(s.metrics_port, registry=exposition(metrics))
    # Blocking reads need a socket timeout longer than the block; everything else keeps the
    # short round-trip bound of the gateway.
    longest_block_s = max(s.block_ms, s.batch_max_wait_ms) / 1000.0
    reader_settings = settings.redis.model_copy(
        update={
            "socket_timeout_s": settings.redis.socket_timeout_s + longest_block_s,
            "max_connections": 2,
        }
    )
    try:
        async with (
            open_redis(settings.redis) as client,
            open_redis(reader_settings) as reader,
            TritonClient(settings.triton) as triton,
        ):
            versions = await verify_models(
                specs, triton, url=settings.triton.url, wait_s=settings.triton.startup_wait_s
            )
            max_batch = {}
            for name, spec in specs.items():
                metadata = await triton.model_metadata(spec.triton_name, versions[name])
                max_batch[name] = int(metadata["config"].get("max_batch_size", 0))
            event_log = EventLog(client, reader, stream=s.stream, group=s.group, consumer=consumer)
            store = RedisStore(client)
            scorer = Scorer(specs, versions, store, triton, max_batch)
            worker = StreamWorker(s, event_log, scorer, specs, metrics)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            print(
                f"stream worker {consumer} ready: reading {s.stream} (group {s.group}), "
                f"models {versions}",
                flush=True,
            )
            try:
                await worker.run()
            finally:
                await store.aclose()
    except SpecError as e:
        log.error("%s", e)
        return 1
    except DependencyUnavailable as e:
        log.error("start-up failed: %s", e.detail)
        return 1
    finally:
        if http is not None:
            http.shutdown()
    return 0
