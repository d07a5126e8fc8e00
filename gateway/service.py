"""PredictionService: the whole predict flow, shared by every transport.

validate (done by the caller) → one Redis round trip → fresh cached prediction, or build the
tensor and call Triton once for all misses → write the new predictions back in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.cache import CachedPrediction
from gateway.errors import GatewayError, ModelNotFound, PredictionNotCached
from gateway.spec import ModelSpec
from gateway.store import EntityRecord, RedisStore
from gateway.tensor import build_rows
from gateway.triton import TritonClient
from gateway.validation import PredictRequest

log = logging.getLogger(__name__)

Source = Literal["cache", "model", "none"]


@dataclass(frozen=True, slots=True)
class Prediction:
    entity_id: str
    scores: tuple[float, ...] | None
    """One value per declared output; None only for a batch item with cache=only and no entry."""
    source: Source
    prediction_age_s: float | None
    feature_age_s: float | None
    """Age of the stored features the prediction was computed from; None if none were used."""


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
    ) -> None:
        self.specs = dict(specs)
        self.served_versions = dict(served_versions)
        self._store = store
        self._triton = triton
        self._clock = clock
        # Write-backs run after the answer is sent; references keep the tasks alive.
        self._pending_writes: set[asyncio.Task[None]] = set()

    def spec(self, model: str) -> ModelSpec:
        spec = self.specs.get(model)
        if spec is None:
            raise ModelNotFound(f"model {model!r} is not served here")
        return spec

    async def predict(
        self, spec: ModelSpec, request: PredictRequest, *, timeout_s: float | None = None
    ) -> PredictOutcome:
        """``timeout_s`` bounds the Triton call (the caller's remaining deadline)."""
        version = self.served_versions[spec.name]
        items = request.items
        read_cache = [request.cache_mode != "bypass" and not item.overrides for item in items]
        records = await self._store.lookup(
            spec, version, [item.entity_id for item in items], read_cache
        )
        now = self._clock()
        predictions: list[Prediction | None] = [None] * len(items)
        misses: list[int] = []
        for i, record in enumerate(records):
            cached = record.cached
            if (
                read_cache[i]
                and cached is not None
                and cached.is_fresh(
                    now=now,
                    version=version,
                    max_staleness_s=spec.max_staleness_s,
                    features_at=record.features_at,
                )
            ):
                predictions[i] = Prediction(
                    entity_id=items[i].entity_id,
                    scores=cached.scores,
                    source="cache",
                    prediction_age_s=max(0.0, now - cached.scored_at),
                    feature_age_s=_age(now, cached.features_at),
                )
            elif request.cache_mode == "only":
                if not request.batch:
                    raise PredictionNotCached(
                        f"no fresh cached prediction for entity {items[i].entity_id!r}"
                    )
                predictions[i] = Prediction(items[i].entity_id, None, "none", None, None)
            else:
                misses.append(i)
        if misses:
            await self._score_misses(
                spec, version, request, records, misses, predictions, now, timeout_s
            )
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
        timeout_s: float | None,
    ) -> None:
        items = request.items
        rows = build_rows(
            spec,
            [items[i] for i in misses],
            [records[i].stored for i in misses],
            field_prefix=[f"instances[{i}]." for i in misses] if request.batch else None,
        )
        result = await self._triton.infer(spec, version, rows, timeout_s=timeout_s)
        score_rows = result.scores.tolist()
        write_back: list[tuple[str, CachedPrediction]] = []
        for position, i in enumerate(misses):
            scores = tuple(score_rows[position])
            features_at = records[i].features_at
            predictions[i] = Prediction(
                entity_id=items[i].entity_id,
                scores=scores,
                source="model",
                prediction_age_s=0.0,
                feature_age_s=_age(now, features_at),
            )
            # A prediction computed from request overrides is not the entity's prediction.
            if not items[i].overrides:
                write_back.append(
                    (
                        items[i].entity_id,
                        CachedPrediction(scores, result.model_version, now, features_at),
                    )
                )
        if write_back:
            task = asyncio.create_task(self._write_back(spec, write_back))
            self._pending_writes.add(task)
            task.add_done_callback(self._pending_writes.discard)

    async def _write_back(
        self, spec: ModelSpec, entries: list[tuple[str, CachedPrediction]]
    ) -> None:
        try:
            await self._store.write_predictions(spec, entries)
        except GatewayError:
            # The answer already went out; a lost write-back only costs a later cache miss.
            log.warning("prediction write-back failed", extra={"model": spec.name})

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for pending write-backs (shutdown, tests)."""
        if self._pending_writes:
            await asyncio.wait(set(self._pending_writes), timeout=timeout_s)

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


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else max(0.0, now - at)
