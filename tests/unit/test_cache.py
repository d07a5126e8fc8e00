"""gateway.cache: prediction keys, the stored record, and the freshness rule."""

from __future__ import annotations

import orjson
import pytest

from gateway.cache import PREDICTION_PREFIX, CachedPrediction, Usability, prediction_key
from gateway.spec import ServingPolicy

POLICY = ServingPolicy(
    cache_ttl_s=3600,
    max_age_s=60.0,
    stale_while_revalidate_s=30.0,
    max_staleness_s=600.0,
    default_scores=None,
    without_feature_store="fail",
    max_feature_age_s=None,
    on_old_features="flag",
)

REC = CachedPrediction(
    scores=(0.125, 0.75), model_version="3", scored_at=1_700_000_000.5, features_at=1_699_999_000.0
)


def test_prediction_key_includes_model_and_version() -> None:
    assert PREDICTION_PREFIX == "gw:p"
    assert prediction_key("fraud_scorer", "3", "card-1") == "gw:p:fraud_scorer:3:card-1"
    assert prediction_key("fraud_scorer", "3", "x") != prediction_key("fraud_scorer", "4", "x")
    assert prediction_key("m1", "1", "x") != prediction_key("m2", "1", "x")


@pytest.mark.parametrize(
    "rec",
    [
        REC,
        CachedPrediction(scores=(0.5,), model_version="1", scored_at=10.0, features_at=None),
        CachedPrediction(scores=(), model_version="10", scored_at=0.0, features_at=0.0),
    ],
)
def test_round_trip(rec: CachedPrediction) -> None:
    encoded = rec.encode()
    assert isinstance(encoded, bytes)
    assert CachedPrediction.decode(encoded) == rec


def test_encoded_layout() -> None:
    assert orjson.loads(REC.encode()) == {
        "s": [0.125, 0.75],
        "v": "3",
        "t": 1_700_000_000.5,
        "f": 1_699_999_000.0,
    }


def test_decode_coerces_types() -> None:
    rec = CachedPrediction.decode(b'{"s": [1, 0], "v": 2, "t": 5}')
    assert rec == CachedPrediction(
        scores=(1.0, 0.0), model_version="2", scored_at=5.0, features_at=None
    )
    assert all(type(s) is float for s in rec.scores)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"null",
        b"[]",
        b"42",
        b'"str"',
        b"{}",
        b'{"v": "1", "t": 1}',  # no scores
        b'{"s": [0.1], "t": 1}',  # no version
        b'{"s": [0.1], "v": "1"}',  # no scored_at
        b'{"s": 0.1, "v": "1", "t": 1}',  # scores not a list
        b'{"s": [0.1], "v": "1", "t": "yesterday"}',
        b'{"s": ["x"], "v": "1", "t": 1}',
        b'{"s": [0.1], "v": "1", "t": 1, "f": "x"}',
        b'{"s": [0.1], "v": "1", "t": null}',
    ],
)
def test_decode_unreadable_returns_none(raw: bytes) -> None:
    assert CachedPrediction.decode(raw) is None


NOW = 1_000_000.0


def rec(*, version: str = "1", scored_at: float = NOW - 10, features_at: float | None = 500.0):
    return CachedPrediction(
        scores=(0.3,), model_version=version, scored_at=scored_at, features_at=features_at
    )


def usability(
    r: CachedPrediction, *, version: str = "1", features_at: float | None = 500.0
) -> Usability:
    return r.usability(now=NOW, version=version, policy=POLICY, features_at=features_at)


def fresh(r: CachedPrediction, *, version: str = "1", features_at: float | None = 500.0) -> bool:
    return usability(r, version=version, features_at=features_at) is Usability.FRESH


def test_fresh_when_everything_matches() -> None:
    assert fresh(rec()) is True


def test_version_mismatch_is_stale() -> None:
    assert fresh(rec(version="1"), version="2") is False
    assert fresh(rec(version="1"), version="01") is False


def test_age_limit_is_inclusive() -> None:
    assert fresh(rec(scored_at=NOW - 60)) is True
    assert fresh(rec(scored_at=NOW - 60.001)) is False
    assert fresh(rec(scored_at=NOW - 3600)) is False


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0.0, Usability.FRESH),
        (60.0, Usability.FRESH),
        (60.5, Usability.REVALIDATE),
        (90.0, Usability.REVALIDATE),
        (90.5, Usability.FALLBACK),
        (600.0, Usability.FALLBACK),
        (600.5, Usability.UNUSABLE),
    ],
)
def test_age_windows_map_to_ladder_rungs(age: float, expected: Usability) -> None:
    assert usability(rec(scored_at=NOW - age)) is expected


def test_retired_by_newer_features_even_when_young() -> None:
    # Newer features make the record useless on every rung, fallback included.
    assert usability(rec(scored_at=NOW - 1, features_at=500.0), features_at=501.0) is (
        Usability.UNUSABLE
    )
    assert usability(rec(version="1", scored_at=NOW - 1), version="2") is Usability.UNUSABLE


def test_features_newer_than_prediction_is_stale() -> None:
    assert fresh(rec(features_at=500.0), features_at=500.5) is False


def test_features_same_or_older_is_fresh() -> None:
    assert fresh(rec(features_at=500.0), features_at=500.0) is True
    assert fresh(rec(features_at=500.0), features_at=400.0) is True


def test_no_stored_features_now_is_fresh() -> None:
    assert fresh(rec(features_at=None), features_at=None) is True
    assert fresh(rec(features_at=500.0), features_at=None) is True


def test_features_appeared_after_prediction_is_stale() -> None:
    # scored without any stored features; features have been written since
    assert fresh(rec(features_at=None), features_at=1.0) is False


def test_version_checked_before_features() -> None:
    assert fresh(rec(features_at=None), version="2", features_at=None) is False


def test_decode_rejects_scores_that_are_not_a_list() -> None:
    assert CachedPrediction.decode(b'{"s": "12", "v": "1", "t": 1.0, "f": null}') is None
