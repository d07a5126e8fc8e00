"""PredictionService: the whole predict flow, shared by every transport.

validate (done by the caller) → one Redis round trip → the fallback ladder:

1. fresh cached prediction (source ``cache``); within the stale-while-revalidate window a
   cached prediction is served flagged (source ``stale``, flag ``revalidating``) while one
   background refresh recomputes it;
2. real time: one Triton call for all misses, coalesced with concurrent identical misses
   (source ``model``), written back after the answer;
3. if real time fails: the cached prediction up to ``max_staleness_s`` old (source ``stale``,
   flag ``fallback``);
4. then the model's declared default scores (source ``default``, flag ``fallback``);
5. else the error (503/504).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from gateway.auth import check_caller_may_write
from gateway.cache import CachedPrediction, Usability
from gateway.coalesce import SingleFlight
from gateway.errors import (
    DeadlineExceeded,
    FeaturesTooOld,
    FeatureStoreUnavailable,
    GatewayError,
    InferenceFailed,
    InferenceTimeout,
    InferenceUnavailable,
    InvalidRequest,
    ModelNotFound,
    NamespaceNotFound,
    PredictionNotCached,
)
from gateway.features import FeatureUpdate, FeatureWriteReport
from gateway.microbatch import TickBatcher
from gateway.spec import ModelSpec, ServingPolicy
from gateway.store import NO_RECORD, EntityRecord, RedisStore, refresh_key
from gateway.telemetry import tracing
from gateway.telemetry.metrics import observe_prediction, observe_predictions
from gateway.tensor import build_rows, pack_row
from gateway.triton import TritonClient
from gateway.validation import CacheMode, EntityQuery, PredictRequest
from gateway.waits import within

log = logging.getLogger(__name__)

Source = Literal["cache", "stale", "model", "default", "none"]
EntityCacheMode = Literal["prefer", "bypass"]
"""The cache modes of :meth:`PredictionService.predict_entity`."""
Flag = Literal["revalidating", "fallback", "old_features", "no_feature_store"]

# Real-time failures the ladder may answer for; client errors are never papered over.
_LADDER_ERRORS = (InferenceUnavailable, InferenceTimeout, InferenceFailed)
MIN_REALTIME_BUDGET_S = 0.003
"""Below this remaining budget a Triton round trip cannot succeed: 504 at once."""
_REFRESH_CLAIM_MS = 10_000
"""How long one replica owns a stale entry's refresh (longer than any Triton call)."""

_Scores = tuple[float, ...]
_FlightKey = tuple[str, str, str, float | None]
_ModelKey = tuple[str, str]
"""(model name, served version)."""
_LookupPart = tuple[Sequence[str], Sequence[bool]]
_InferPart = tuple[bytes, int, float | None]
"""Rows packed as Triton takes them (``gateway.tensor.pack_row``), how many, and the caller's
deadline (``time.monotonic()``), if it has one."""
_ScoredRows = tuple[list[list[float]], str]


class Prediction(NamedTuple):
    """One per answered entity: a NamedTuple, immutable and cheaper to build than a frozen
    dataclass."""

    entity_id: str
    scores: _Scores | None
    """One value per declared output; None only for a batch item that got no answer."""
    source: Source
    prediction_age_s: float | None
    feature_age_s: float | None
    """Age (by event time) of the stored features it was computed from; None if none."""
    flags: tuple[Flag, ...] = ()


@dataclass(frozen=True, slots=True)
class PredictOutcome:
    spec: ModelSpec
    model_version: str
    predictions: list[Prediction]


class PredictionService:
    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        served_versions: Mapping[str, str],
        store: RedisStore,
        triton: TritonClient,
        *,
        clock: Callable[[], float] = time.time,
        tick_batching: bool = True,
        infer_window_s: float = 0.0,
        write_back_window_s: float = 0.0,
    ) -> None:
        self.specs = dict(specs)
        self.served_versions = dict(served_versions)
        self._store = store
        self._triton = triton
        self._clock = clock
        self._flight: SingleFlight[tuple[_Scores, str]] = SingleFlight()
        # Requests ready in the same event-loop iteration share one Redis pipeline and one
        # Triton call per model (docs/measurements.md: what this buys); sampled requests
        # (tracing) get their own calls, so their traces hold every span.
        self._lookups: TickBatcher[_ModelKey, _LookupPart, list[EntityRecord]] = TickBatcher(
            self._lookup_many,
            cancelled=lambda: FeatureStoreUnavailable("feature lookup cancelled"),
            enabled=tick_batching,
        )
        self._inferences: TickBatcher[_ModelKey, _InferPart, _ScoredRows] = TickBatcher(
            self._infer_many,
            cancelled=lambda: InferenceUnavailable("inference call cancelled"),
            enabled=tick_batching,
            window_s=infer_window_s,
            # A model's misses wait only while one of its calls is out, and go when it ends:
            # a closed loop's waves would otherwise wait out the window with all their
            # companions already aboard (docs/measurements.md).
            max_calls=1,
        )
        self._writes: TickBatcher[str, list[tuple[str, CachedPrediction]], None] = TickBatcher(
            self._write_many,
            cancelled=lambda: FeatureStoreUnavailable("prediction write-back cancelled"),
            enabled=tick_batching,
            # Write-backs happen after the answer: their wait costs no client any latency.
            window_s=write_back_window_s,
        )
        self._refreshing: set[tuple[str, str, str]] = set()
        # Write-backs and refreshes run after the answer is sent; references keep them alive.
        self._background: set[asyncio.Task[None]] = set()
        self._by_namespace: dict[str, list[ModelSpec]] = {}
        for spec in self.specs.values():
            self._by_namespace.setdefault(spec.entity_namespace, []).append(spec)

    def spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(f"model {model!r} is not served here")
        return spec

    def namespace_specs(self, namespace: str) -> list[ModelSpec]:
        """The models reading ``namespace``, once the caller may write its features."""
        specs = self._by_namespace.get(namespace)
        if specs is None:
            raise NamespaceNotFound(f"no served model reads entity namespace {namespace!r}")
        check_caller_may_write(namespace, [spec.name for spec in specs])
        return specs

    async def push_features(
        self, namespace: str, updates: Sequence[FeatureUpdate]
    ) -> FeatureWriteReport:
        """Store features; each applied update retires the entity's cached predictions."""
        invalidate = [
            (spec.name, self.served_versions[spec.name]) for spec in self.namespace_specs(namespace)
        ]
        return await self._store.write_features(namespace, updates, invalidate=invalidate)

    async def predict(
        self, spec: ModelSpec, request: PredictRequest, *, timeout_s: float | None = None
    ) -> PredictOutcome:
        """``timeout_s``: the caller's remaining deadline; it bounds Redis and Triton."""
        deadline = _deadline(timeout_s)
        version = self.served_versions[spec.name]
        items = request.items
        # A prediction computed from request overrides is not the entity's prediction.
        read_cache = [not item.overrides for item in items]
        ids = [item.entity_id for item in items]
        records, degraded = await self._fetch(
            spec, version, ids, read_cache, request.cache_mode, timeout_s
        )
        return await self._resolve(spec, version, request, records, degraded, deadline)

    async def predict_entity(
        self,
        spec: ModelSpec,
        entity_id: str,
        *,
        mode: EntityCacheMode = "prefer",
        timeout_s: float | None = None,
    ) -> Prediction | PredictOutcome:
        """The common request: one entity, no overrides, cache mode ``prefer`` or ``bypass``.

        A fresh cached prediction, or a real-time score with nothing to flag (or the
        fallback the ladder gives when real time fails), comes back as the
        :class:`Prediction` that :meth:`predict` would have put in its outcome, without the
        ladder's per-item lists and outcome (docs/measurements.md); anything else is
        :meth:`predict`'s outcome, from the same lookup.
        """
        deadline = _deadline(timeout_s)
        version = self.served_versions[spec.name]
        records, degraded = await self._fetch(
            spec, version, [entity_id], _READ_CACHE, mode, timeout_s
        )
        if not degraded:
            record = records[0]
            now = self._clock()
            if mode == "prefer":
                hit = _fresh_hit(spec, version, entity_id, record, now)
                if hit is not None:
                    observe_prediction(spec.name, hit, bypass=False)
                    return hit
            usability = _plain_miss(spec, version, record, now, mode)
            if usability is not None:
                scored = await self._score_entity(
                    spec, version, entity_id, record, usability, now, deadline, mode
                )
                observe_prediction(spec.name, scored, bypass=mode == "bypass")
                return scored
        request = PredictRequest(
            items=[EntityQuery(entity_id=entity_id, overrides={})], cache_mode=mode, batch=False
        )
        return await self._resolve(spec, version, request, records, degraded, deadline)

    async def _score_entity(
        self,
        spec: ModelSpec,
        version: str,
        entity_id: str,
        record: EntityRecord,
        usability: Usability,
        now: float,
        deadline: float | None,
        mode: EntityCacheMode,
    ) -> Prediction:
        """:meth:`_score_misses` for one entity with nothing to flag: real time, written
        back, else the ladder's fallback."""
        row = pack_row(spec, entity_id, record.stored)
        features_at = record.features_at
        _check_realtime_budget(deadline)
        try:
            scores, model_version, led = await self._infer_one(
                spec, version, row, (spec.name, version, entity_id, features_at), deadline
            )
        except _LADDER_ERRORS as error:
            request = PredictRequest([EntityQuery(entity_id, {})], mode, batch=False)
            answer: list[Prediction | None] = [None]
            self._answer_from_ladder(
                spec, request, [record], [0], answer, now, error, [()], [usability]
            )
            fallback = answer[0]
            if fallback is None:  # _answer_from_ladder answers the miss or raises
                raise error
            return fallback
        if led:
            cached = CachedPrediction(scores, model_version, now, features_at)
            self._write_back(spec.name, [(entity_id, cached)])
        return Prediction(entity_id, scores, "model", 0.0, _age(now, features_at), ())

    async def _fetch(
        self,
        spec: ModelSpec,
        version: str,
        ids: Sequence[str],
        read_cache: Sequence[bool],
        mode: CacheMode,
        timeout_s: float | None,
    ) -> tuple[list[EntityRecord], bool]:
        """Each entity's record, and whether the store was down (degraded: empty records)."""
        try:
            lookup = self._lookups.post(
                (spec.name, version), (ids, read_cache), alone=tracing.in_sampled_trace()
            )
            # The deadline bounds everything the lookup may wait for: (re)connecting, the
            # round trip and its one retry. (The lookup's own errors, TimeoutError being an
            # OSError, arrive as FeatureStoreUnavailable: a TimeoutError here is the deadline.)
            try:
                return await within(lookup, timeout_s, shared=False), False
            except TimeoutError:
                raise DeadlineExceeded("deadline passed during the feature lookup") from None
        except FeatureStoreUnavailable:
            if spec.policy.without_feature_store == "fail" or mode == "only":
                raise
            return [NO_RECORD] * len(ids), True

    async def _resolve(
        self,
        spec: ModelSpec,
        version: str,
        request: PredictRequest,
        records: list[EntityRecord],
        degraded: bool,
        deadline: float | None,
    ) -> PredictOutcome:
        """The serving ladder over looked-up records: cache, model, stale, default."""
        policy = spec.policy
        items = request.items
        mode = request.cache_mode
        now = self._clock()
        predictions: list[Prediction | None] = [None] * len(items)
        misses: list[int] = []
        # Per item, computed once: the ladder below reuses them for the misses, so every rung
        # (model, stale, default) carries no_feature_store when the store was down.
        degraded_flags: tuple[Flag, ...] = ("no_feature_store",) if degraded else ()
        feature_flags: list[tuple[Flag, ...]] = [degraded_flags] * len(items)
        usabilities: list[Usability] = [Usability.UNUSABLE] * len(items)
        for i, record in enumerate(records):
            item = items[i]
            feature_age = _age(now, record.features_at)
            if feature_age is not None and _too_old(policy, feature_age):
                if policy.on_old_features == "reject":
                    error = FeaturesTooOld(
                        f"stored features of entity {item.entity_id!r} are {feature_age:.0f}s "
                        f"old (limit {policy.max_feature_age_s:.0f}s)",
                        field=f"instances[{i}].entity_id" if request.batch else "entity_id",
                    )
                    if not request.batch:
                        raise error
                    predictions[i] = Prediction(
                        item.entity_id, None, "none", None, feature_age, ("old_features",)
                    )
                    continue
                feature_flags[i] = (*degraded_flags, "old_features")
            flags = feature_flags[i]
            cached = record.cached
            usability = (
                Usability.UNUSABLE
                if cached is None
                else cached.usability(
                    now=now, version=version, policy=policy, features_at=record.features_at
                )
            )
            usabilities[i] = usability
            if cached is not None and mode != "bypass" and usability is Usability.FRESH:
                predictions[i] = _from_cache(item.entity_id, cached, "cache", now, flags)
            elif cached is not None and mode == "prefer" and usability is Usability.REVALIDATE:
                predictions[i] = _from_cache(
                    item.entity_id, cached, "stale", now, (*flags, "revalidating")
                )
                self._refresh_later(spec, version, item, record)
            elif mode == "only":
                if not request.batch:
                    raise PredictionNotCached(
                        f"no fresh cached prediction for entity {item.entity_id!r}"
                    )
                predictions[i] = Prediction(item.entity_id, None, "none", None, None, flags)
            else:
                misses.append(i)
        if misses:
            await self._score_misses(
                spec,
                version,
                request,
                records,
                misses,
                predictions,
                now,
                deadline,
                degraded,
                feature_flags,
                usabilities,
            )
        observe_predictions(spec.name, request, predictions)
        return PredictOutcome(
            spec=spec,
            model_version=version,
            predictions=[p for p in predictions if p is not None],
        )

    async def _score_misses(
        self,
        spec: ModelSpec,
        version: str,
        request: PredictRequest,
        records: list[EntityRecord],
        misses: list[int],
        predictions: list[Prediction | None],
        now: float,
        deadline: float | None,
        degraded: bool,
        feature_flags: list[tuple[Flag, ...]],
        usabilities: list[Usability],
    ) -> None:
        items = request.items
        try:
            rows = build_rows(
                spec,
                [items[i] for i in misses],
                [records[i].stored for i in misses],
                field_prefix=[f"instances[{i}]." for i in misses] if request.batch else None,
            ).tobytes()
        except InvalidRequest as e:
            if degraded:
                # The value is probably stored; the client is not at fault, the outage is.
                raise FeatureStoreUnavailable(
                    "feature store unavailable and the request lacks required features",
                    field=e.field,
                ) from e
            raise
        keys: list[_FlightKey | None] = [
            None
            if degraded or items[i].overrides
            else (spec.name, version, items[i].entity_id, records[i].features_at)
            for i in misses
        ]
        _check_realtime_budget(deadline)
        try:
            results = await self._infer_coalesced(spec, version, rows, keys, deadline)
        except _LADDER_ERRORS as error:
            self._answer_from_ladder(
                spec, request, records, misses, predictions, now, error, feature_flags, usabilities
            )
            return
        write_back: list[tuple[str, CachedPrediction]] = []
        for position, i in enumerate(misses):
            scores, model_version, led = results[position]
            features_at = records[i].features_at
            predictions[i] = Prediction(
                entity_id=items[i].entity_id,
                scores=scores,
                source="model",
                prediction_age_s=0.0,
                feature_age_s=_age(now, features_at),
                flags=feature_flags[i],
            )
            # Followers' results are written by their leader.
            if led and keys[position] is not None:
                write_back.append(
                    (items[i].entity_id, CachedPrediction(scores, model_version, now, features_at))
                )
        if write_back:
            self._write_back(spec.name, write_back)

    def _write_back(self, model: str, entries: list[tuple[str, CachedPrediction]]) -> None:
        # Not a task per request: the write joins this iteration's (or window's) call, which
        # logs its own failure (_write_many); nobody waits for the part's future.
        self._writes.post(model, entries, alone=tracing.in_sampled_trace())

    async def _infer_coalesced(
        self,
        spec: ModelSpec,
        version: str,
        rows: bytes,
        keys: list[_FlightKey | None],
        deadline: float | None,
    ) -> list[tuple[_Scores, str, bool]]:
        """(scores, model version, led) per row of ``rows`` (packed, one per key); a row
        already in flight awaits that call.
        ``deadline``: the caller's, on ``time.monotonic()``; past it, InferenceTimeout. gRPC's
        own deadline is the first bound; this one also covers a channel that is
        (re)connecting to a Triton that went away, and the wait for a batch's company."""
        leaders: list[int] = []
        led_keys: list[_FlightKey | None] = []
        followers: list[tuple[int, asyncio.Future[tuple[_Scores, str]]]] = []
        for position, key in enumerate(keys):
            in_flight = None if key is None else self._flight.join(key)
            if in_flight is not None:
                followers.append((position, in_flight))
                continue
            if key is not None:
                self._flight.lead(key)
            leaders.append(position)
            led_keys.append(key)
        out: list[tuple[_Scores, str, bool]] = [((), "", False)] * len(keys)
        timeout_s = None if deadline is None else deadline - time.monotonic()
        if leaders:
            if len(leaders) == len(keys):
                batch = rows
            else:
                size = len(rows) // len(keys)
                batch = b"".join([rows[p * size : (p + 1) * size] for p in leaders])
            call = self._lead(spec, version, batch, led_keys, deadline, timeout_s)
            try:
                score_rows, model_version = await within(call, timeout_s, shared=False)
            except TimeoutError:
                raise InferenceTimeout("inference deadline exceeded") from None
            for n, position in enumerate(leaders):
                out[position] = (tuple(score_rows[n]), model_version, True)
        for position, future in followers:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                scores, model_version = await within(future, left, shared=True)
            except TimeoutError:
                raise InferenceTimeout("inference deadline exceeded") from None
            out[position] = (scores, model_version, False)
        return out

    async def _infer_one(
        self,
        spec: ModelSpec,
        version: str,
        row: bytes,
        key: _FlightKey,
        deadline: float | None,
    ) -> tuple[_Scores, str, bool]:
        """:meth:`_infer_coalesced` for one row (the plain miss), without the lists a batch
        of rows needs (~3 µs: benchmarks.miss_layers)."""
        timeout_s = None if deadline is None else deadline - time.monotonic()
        in_flight = self._flight.join(key)
        try:
            if in_flight is not None:
                scores, model_version = await within(in_flight, timeout_s, shared=True)
                return scores, model_version, False
            self._flight.lead(key)
            call = self._lead(spec, version, row, [key], deadline, timeout_s)
            score_rows, model_version = await within(call, timeout_s, shared=False)
        except TimeoutError:
            raise InferenceTimeout("inference deadline exceeded") from None
        return tuple(score_rows[0]), model_version, True

    def _lead(
        self,
        spec: ModelSpec,
        version: str,
        rows: bytes,
        keys: list[_FlightKey | None],
        deadline: float | None,
        timeout_s: float | None,
    ) -> asyncio.Future[_ScoredRows]:
        """Rows that lead their keys join this iteration's Triton call, as a future the caller
        owns (it may cancel it: its deadline, its client gone); whoever follows one of the
        keys gets the call's outcome all the same."""
        return self._inferences.post(
            (spec.name, version),
            (rows, len(keys), deadline),
            alone=tracing.in_sampled_trace(),
            # Waiting for company may take at most half of what the deadline leaves; the
            # other half is the Triton call's.
            wait_s=None if timeout_s is None else timeout_s / 2,
            settled=lambda outcome: self._settle(outcome, keys),
        )

    async def _lookup_many(
        self, key: _ModelKey, parts: list[_LookupPart]
    ) -> list[list[EntityRecord]]:
        if len(parts) == 1:
            ids, read_cache = parts[0]
            return [await self._store.lookup(self.specs[key[0]], key[1], ids, read_cache)]
        records = await self._store.lookup(
            self.specs[key[0]],
            key[1],
            [entity for ids, _ in parts for entity in ids],
            [read for _, read_cache in parts for read in read_cache],
        )
        out: list[list[EntityRecord]] = []
        start = 0
        for ids, _ in parts:
            out.append(records[start : start + len(ids)])
            start += len(ids)
        return out

    async def _infer_many(self, key: _ModelKey, parts: list[_InferPart]) -> list[_ScoredRows]:
        """One Triton call per max_batch_size rows for the parts of one iteration."""
        spec = self.specs[key[0]]
        chunks: list[list[_InferPart]] = [[]]
        rows_in_chunk = 0
        for part in parts:
            n = part[1]
            if chunks[-1] and rows_in_chunk + n > spec.max_batch_size:
                chunks.append([])
                rows_in_chunk = 0
            chunks[-1].append(part)
            rows_in_chunk += n
        if len(chunks) == 1:  # nearly always: no gather (a task and a future) needed
            return await self._infer_chunk(spec, key[1], chunks[0])
        scored = await asyncio.gather(*(self._infer_chunk(spec, key[1], c) for c in chunks))
        return [result for chunk in scored for result in chunk]

    async def _infer_chunk(
        self, spec: ModelSpec, version: str, parts: list[_InferPart]
    ) -> list[_ScoredRows]:
        deadlines = [deadline for _, _, deadline in parts]
        # The call serves every part, so it may take as long as the most patient one allows;
        # each caller still stops waiting at its own deadline. Taken now, after any wait for
        # company; never under the minimum, so that a late flush (a busy loop) is not sent
        # to Triton already expired and counted against Triton's health by the breaker.
        timeout_s = None
        if None not in deadlines:
            latest = max(d for d in deadlines if d is not None)
            timeout_s = max(latest - time.monotonic(), MIN_REALTIME_BUDGET_S)
        if len(parts) == 1:
            rows, count, _ = parts[0]
        else:
            rows = b"".join([r for r, _, _ in parts])
            count = sum(n for _, n, _ in parts)
        result = await self._triton.infer_packed(
            spec, version, rows, (count, len(spec.features)), timeout_s=timeout_s
        )
        score_rows = result.scores.tolist()
        out: list[_ScoredRows] = []
        start = 0
        for _, n, _ in parts:
            out.append((score_rows[start : start + n], result.model_version))
            start += n
        return out

    async def _write_many(
        self, model: str, parts: list[list[tuple[str, CachedPrediction]]]
    ) -> list[None]:
        entries = parts[0] if len(parts) == 1 else [e for part in parts for e in part]
        try:
            await self._store.write_predictions(self.specs[model], entries)
        except GatewayError:
            # The answers already went out; a lost write-back only costs later cache misses.
            log.warning(
                "prediction write-back failed",
                extra={"model": model, "predictions": len(entries)},
            )
        except Exception:
            log.exception("prediction write-back failed", extra={"model": model})
        return [None] * len(parts)

    def _settle(self, outcome: _ScoredRows | BaseException, keys: list[_FlightKey | None]) -> None:
        """Hand the call's outcome for a leader's rows to every request following one of its
        keys (the batcher calls this even when the leader has stopped waiting)."""
        if isinstance(outcome, BaseException):
            for key in keys:
                if key is not None:
                    self._flight.fail(key, outcome)
            return
        score_rows, model_version = outcome
        for n, key in enumerate(keys):
            if key is not None:
                self._flight.resolve(key, (tuple(score_rows[n]), model_version))

    def _answer_from_ladder(
        self,
        spec: ModelSpec,
        request: PredictRequest,
        records: list[EntityRecord],
        misses: list[int],
        predictions: list[Prediction | None],
        now: float,
        error: GatewayError,
        feature_flags: list[tuple[Flag, ...]],
        usabilities: list[Usability],
    ) -> None:
        """Real time failed: stale cache within max_staleness_s, else default scores, else raise."""
        policy = spec.policy
        answers: list[tuple[int, Prediction]] = []
        for i in misses:
            item, record = request.items[i], records[i]
            flags: tuple[Flag, ...] = (*feature_flags[i], "fallback")
            cached = record.cached
            if (
                cached is not None
                and not item.overrides
                and usabilities[i] is not Usability.UNUSABLE
            ):
                answers.append((i, _from_cache(item.entity_id, cached, "stale", now, flags)))
            elif policy.default_scores is not None:
                answers.append(
                    (
                        i,
                        Prediction(
                            item.entity_id,
                            policy.default_scores,
                            "default",
                            None,
                            _age(now, record.features_at),
                            flags,
                        ),
                    )
                )
            else:
                raise error
        for i, prediction in answers:
            predictions[i] = prediction

    def _refresh_later(
        self, spec: ModelSpec, version: str, item: EntityQuery, record: EntityRecord
    ) -> None:
        """Recompute a stale-while-revalidate entry once, however many requests saw it."""
        key = (spec.name, version, item.entity_id)
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        self._in_background(self._refresh(spec, version, item, record, key))

    async def _refresh(
        self,
        spec: ModelSpec,
        version: str,
        item: EntityQuery,
        record: EntityRecord,
        key: tuple[str, str, str],
    ) -> None:
        try:
            # Other replicas saw the same stale entry: one claim in Redis picks the refresher.
            if not await self._store.claim(
                refresh_key(spec.name, version, item.entity_id), _REFRESH_CLAIM_MS
            ):
                return
            row = pack_row(spec, item.entity_id, record.stored)
            flight_key: _FlightKey = (spec.name, version, item.entity_id, record.features_at)
            scores, model_version, _ = await self._infer_one(spec, version, row, flight_key, None)
            cached = CachedPrediction(scores, model_version, self._clock(), record.features_at)
            await self._store.write_predictions(spec, [(item.entity_id, cached)])
        except GatewayError as e:
            # The stale answer stays servable until its window ends; the next request retries.
            log.warning(
                "background refresh failed",
                extra={"model": spec.name, "error": type(e).__name__},
            )
        finally:
            self._refreshing.discard(key)

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for pending write-backs and refreshes (shutdown, tests)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout_s)
        for batcher in (self._lookups, self._inferences, self._writes):
            await batcher.drain(timeout_s)

    async def readiness(self) -> dict[str, bool]:
        """Redis reachable and every served model ready in Triton."""
        names = list(self.specs)
        checks = await asyncio.gather(
            self._store.ping(),
            *(
                self._triton.model_ready(self.specs[n].triton_name, self.served_versions[n])
                for n in names
            ),
        )
        status = {"redis": checks[0]}
        status.update({f"model:{n}": ok for n, ok in zip(names, checks[1:], strict=True)})
        return status


_READ_CACHE = (True,)


def _deadline(timeout_s: float | None) -> float | None:
    """The caller's deadline on ``time.monotonic()``, from its remaining budget."""
    if timeout_s is None:
        return None
    if timeout_s <= 0:
        raise DeadlineExceeded("the request's deadline passed before it was processed")
    return time.monotonic() + timeout_s


def _check_realtime_budget(deadline: float | None) -> None:
    if deadline is not None and deadline - time.monotonic() < MIN_REALTIME_BUDGET_S:
        # The caller's own deadline, not a Triton failure: 504 now, without trying.
        raise DeadlineExceeded("remaining deadline too short for real-time scoring")


def _plain_miss(
    spec: ModelSpec, version: str, record: EntityRecord, now: float, mode: EntityCacheMode
) -> Usability | None:
    """The cached prediction's usability when the ladder (:meth:`PredictionService._resolve`)
    would score this entity in real time with nothing to flag; None for any other rung (a
    cached answer, features older than the policy allows)."""
    feature_age = _age(now, record.features_at)
    if feature_age is not None and _too_old(spec.policy, feature_age):
        return None
    cached = record.cached
    if cached is None:
        return Usability.UNUSABLE
    usability = cached.usability(
        now=now, version=version, policy=spec.policy, features_at=record.features_at
    )
    if mode == "prefer" and usability in (Usability.FRESH, Usability.REVALIDATE):
        return None
    return usability


def _fresh_hit(
    spec: ModelSpec, version: str, entity_id: str, record: EntityRecord, now: float
) -> Prediction | None:
    """What the ladder answers for a fresh cached prediction with nothing to flag, else None.

    The same rules as :meth:`PredictionService._resolve` in mode ``prefer``: features older
    than the policy allows (rejected or flagged) and every other rung are left to it."""
    cached = record.cached
    if cached is None:
        return None
    feature_age = _age(now, record.features_at)
    if feature_age is not None and _too_old(spec.policy, feature_age):
        return None
    usability = cached.usability(
        now=now, version=version, policy=spec.policy, features_at=record.features_at
    )
    if usability is not Usability.FRESH:
        return None
    return _from_cache(entity_id, cached, "cache", now, ())


def _too_old(policy: ServingPolicy, feature_age: float) -> bool:
    """Stored features older than the policy allows (rejected or flagged, by the policy)."""
    limit = policy.max_feature_age_s
    return limit is not None and feature_age > limit


def _from_cache(
    entity_id: str,
    cached: CachedPrediction,
    source: Source,
    now: float,
    flags: tuple[Flag, ...],
) -> Prediction:
    return Prediction(
        entity_id=entity_id,
        scores=cached.scores,
        source=source,
        prediction_age_s=max(0.0, now - cached.scored_at),
        feature_age_s=_age(now, cached.features_at),
        flags=flags,
    )


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)
