"""``benchmarks.miss_rows`` compares two ways that give Triton the same tensor."""

from __future__ import annotations

import pytest

from benchmarks import miss_rows


@pytest.mark.parametrize("batch", [1, 13])
def test_both_ways_are_timed_on_the_same_bytes(batch: int) -> None:
    stored = miss_rows.stored_rows(batch)
    packed = miss_rows.packed_batch(stored)
    assert packed == miss_rows.numpy_batch(stored)
    assert len(packed) == batch * len(miss_rows.SPEC.features) * 4
    results = miss_rows.measure(batch, batches=5, rounds=1)
    assert all(len(rounds) == 1 and rounds[0] > 0 for rounds in results.values())
