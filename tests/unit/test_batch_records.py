"""What the batch job writes per entity, and which entities the freshness policy holds back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.batch.job import encode_records, features_too_old
from gateway.batch.store import _packed
from gateway.cache import CachedPrediction


@pytest.mark.parametrize("features_at", [1_700_000_000.25, 1e-7, math.nan])
def test_records_are_byte_for_byte_what_the_online_path_caches(features_at: float) -> None:
    scores = [[0.012345678], [1e-8], [0.99]]
    at = np.full(3, features_at)

    records = encode_records(scores, "7", 1_767_225_600.5, at)

    expected_at = None if math.isnan(features_at) else features_at
    assert records == [
        CachedPrediction(tuple(row), "7", 1_767_225_600.5, expected_at).encode() for row in scores
    ]
    decoded = CachedPrediction.decode(records[0])
    assert decoded is not None
    assert decoded.features_at == expected_at


def test_features_older_than_the_limit_are_too_old_like_online() -> None:
    now = 1_000_000.0
    features_at = np.array([now - 10, now - 100, now - 100.5, math.nan, now + 5])

    too_old = features_too_old(features_at, now, max_age_s=100)

    # age > max_age_s (the API's rule); an unknown time or one in the future never is
    assert too_old.tolist() == [False, False, True, False, False]


def test_packed_pieces_keep_any_byte() -> None:
    lengths, blob = _packed([b"card-1", b"", "ü,\n".encode(), b'{"s":[0.5]}'])
    assert lengths == b"6,0,4,11"
    assert blob == b'card-1\xc3\xbc,\n{"s":[0.5]}'
