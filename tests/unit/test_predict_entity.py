"""``predict_entity`` (the plain single-entity request) answers exactly as ``predict`` does.

Its shortcuts (a fresh cached prediction; a real-time score with nothing to flag, or the
ladder's fallback when real time fails) must give the prediction the ladder would give, and
every other record must go the ladder's way: each case runs both methods on the same stored
record, at the same clock, in cache modes ``prefer`` and ``bypass``, with a Triton that
answers and one that fails, and compares what they return or raise.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from gateway.cache import CachedPrediction
from gateway.errors import FeatureStoreUnavailable, GatewayError, InferenceUnavailable
from gateway.service import Prediction, PredictionService, PredictOutcome
from gateway.spec import ModelSpec, load_specs
from gateway.store import EntityRecord, RedisStore
from gateway.telemetry import metrics
from gateway.triton import InferenceResult, TritonClient
from gateway.validation import EntityQuery, PredictRequest

SPEC_PATH = Path(__file__).resolve().parents[2] / "config" / "models.yaml"
NOW = 1_800_000_000.0
ENTITY = "card-000042"


class OneRecordStore:
    """Answers every lookup with one record (or fails); counts lookups, keeps write-backs."""

    def __init__(self, record: EntityRecord | None) -> None:
        self.record = record
        self.lookups = 0
        self.written: list[Any] = []

    async def lookup(
        self, spec: ModelSpec, version: str, ids: list[str], read_cache: list[bool]
    ) -> list[EntityRecord]:
        self.lookups += 1
        if self.record is None:
            raise FeatureStoreUnavailable("feature store unavailable")
        return [self.record for _ in ids]

    async def write_predictions(self, spec: ModelSpec, entries: Any) -> None:
        self.written += list(entries)

    async def claim(self, key: str, ttl_ms: int) -> bool:
        return False  # another replica refreshes: no background task to wait for


class HalvingTriton:
    async def infer_packed(
        self,
        spec: Any,
        version: str,
        raw: bytes,
        shape: tuple[int, ...],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        rows = np.frombuffer(raw, dtype="<f4").reshape(shape)
        return InferenceResult(scores=rows[:, :1] / 2, model_version=version)


class FailingTriton:
    async def infer_packed(
        self,
        spec: Any,
        version: str,
        raw: bytes,
        shape: tuple[int, ...],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        raise InferenceUnavailable("inference server unavailable")


def spec_with(**policy: Any) -> ModelSpec:
    spec = load_specs(SPEC_PATH)["fraud_scorer"]
    return dataclasses.replace(spec, policy=dataclasses.replace(spec.policy, **policy))


STORED: list[bytes | None] = [b"3.5" for _ in load_specs(SPEC_PATH)["fraud_scorer"].features]


def cached(age_s: float, *, version: str = "1", features_at: float | None = NOW - 600) -> Any:
    return CachedPrediction((0.25,), version, NOW - age_s, features_at)


def record(cached: CachedPrediction | None, features_at: float | None = NOW - 600) -> EntityRecord:
    return EntityRecord(stored=list(STORED), features_at=features_at, cached=cached)


CASES: dict[str, tuple[dict[str, Any], EntityRecord | None, tuple[bool, bool]]] = {
    # name: (policy changes, the stored record or None for a failing store,
    #        answered without the ladder in mode prefer, in mode bypass)
    "fresh": ({}, record(cached(10)), (True, True)),
    "fresh, scored before its features were written": (
        {},
        record(cached(10, features_at=NOW - 900), features_at=NOW - 900),
        (True, True),
    ),
    "fresh, no stored features time": (
        {},
        record(cached(10, features_at=None), None),
        (True, True),
    ),
    "revalidating": ({}, record(cached(3600 + 60)), (False, True)),
    "fallback only": ({}, record(cached(3600 + 600)), (True, True)),
    "too old to serve at all": ({}, record(cached(30_000)), (True, True)),
    "another model version": ({}, record(cached(10, version="0")), (True, True)),
    "features newer than the prediction": (
        {},
        record(cached(10, features_at=NOW - 900), features_at=NOW - 300),
        (True, True),
    ),
    "nothing cached": ({}, record(None), (True, True)),
    "nothing cached, no default scores": (
        {"default_scores": None},
        record(None),
        (True, True),
    ),
    "no stored features, no default for one": ({}, record(None, None), (True, True)),
    "old features, flagged": ({"max_feature_age_s": 60.0}, record(cached(10)), (False, False)),
    "old features, rejected": (
        {"max_feature_age_s": 60.0, "on_old_features": "reject"},
        record(cached(10)),
        (False, False),
    ),
    "old features within the limit": (
        {"max_feature_age_s": 3600.0},
        record(cached(10)),
        (True, True),
    ),
    # The lookup's error, before any rung.
    "store down, fail": ({"without_feature_store": "fail"}, None, (True, True)),
    "store down, defaults": ({"without_feature_store": "defaults"}, None, (False, False)),
}


def buffered_metrics() -> dict[tuple[Any, ...], list[float]]:
    """Every buffered API metric's current value (the buffers are flushed only on a timer)."""
    return {
        key: [getattr(b, "_n", 0), *getattr(b, "_counts", ()), getattr(b, "_sum", 0.0)]
        for key, b in metrics._buffers.items()
    }


def changes(
    old: dict[tuple[Any, ...], list[float]], new: dict[tuple[Any, ...], list[float]]
) -> dict[tuple[Any, ...], list[float]]:
    """What was added to each metric in between (unchanged ones left out)."""
    out = {}
    for key, values in new.items():
        was = old.get(key, [0.0] * len(values))
        delta = [round(v - w, 9) for v, w in zip(values, was, strict=True)]
        if any(delta):
            out[key] = delta
    return out


def service_for(spec: ModelSpec, store: OneRecordStore, triton: Any) -> PredictionService:
    return PredictionService(
        {spec.name: spec},
        {spec.name: "1"},
        cast(RedisStore, store),
        cast(TritonClient, triton),
        clock=lambda: NOW,
    )


async def outcome_of(call: Any) -> Any:
    try:
        return await call
    except GatewayError as error:
        return (type(error), str(error), error.field)


@pytest.mark.parametrize("triton", [HalvingTriton, FailingTriton])
@pytest.mark.parametrize("mode", ["prefer", "bypass"])
@pytest.mark.parametrize("case", list(CASES))
async def test_the_plain_request_is_answered_as_the_general_one(
    case: str, mode: Any, triton: type
) -> None:
    policy, stored_record, shortcuts = CASES[case]
    spec = spec_with(**policy)
    general_store, plain_store = OneRecordStore(stored_record), OneRecordStore(stored_record)
    request = PredictRequest([EntityQuery(ENTITY, {})], mode, batch=False)

    before = buffered_metrics()
    general = await outcome_of(service_for(spec, general_store, triton()).predict(spec, request))
    between = buffered_metrics()
    plain_service = service_for(spec, plain_store, triton())
    ladder_calls: list[object] = []
    resolve = plain_service._resolve

    async def counted_resolve(*args: Any) -> PredictOutcome:
        ladder_calls.append(args)
        return await resolve(*args)

    plain_service._resolve = counted_resolve  # type: ignore[method-assign]
    plain = await outcome_of(plain_service.predict_entity(spec, ENTITY, mode=mode))
    after = buffered_metrics()
    for _ in range(5):  # write-backs run after the answer
        await asyncio.sleep(0)

    if isinstance(plain, Prediction):
        assert general == PredictOutcome(spec=spec, model_version="1", predictions=[plain])
    else:
        assert plain == general
    # The shortcut was taken where it applies: the ladder was not.
    assert (not ladder_calls) is shortcuts[mode == "bypass"]
    if not ladder_calls and not isinstance(plain, tuple):
        assert isinstance(plain, Prediction)
    # One lookup each, and the same write-backs (a miss writes its result back).
    assert plain_store.lookups == general_store.lookups == 1
    assert plain_store.written == general_store.written
    # The same prediction metrics (source, feature age, prediction age).
    assert changes(between, after) == changes(before, between)
