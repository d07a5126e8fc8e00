"""``benchmarks.miss_layers`` times what it says: a plain miss scored and written back, a fresh
hit, and two ways to the same input tensor."""

from __future__ import annotations

import pytest

from benchmarks import miss_layers


async def test_the_miss_case_scores_and_writes_back_and_the_hit_case_hits() -> None:
    misses, written = await miss_layers.answers(13, "bypass")
    assert {(p.source, p.scores) for p in misses} == {("model", (0.25,))}
    assert len({p.entity_id for p in misses}) == 13
    assert written == 13
    hits, written = await miss_layers.answers(13, "prefer")
    assert {(p.source, p.scores) for p in hits} == {("cache", (0.5,))}
    assert written == 0


@pytest.mark.parametrize("batch", [1, 13])
def test_both_ways_to_the_tensor_give_the_same_bytes(batch: int) -> None:
    stored = miss_layers.stored_rows(batch)
    packed = miss_layers.packed_batch(stored)
    assert packed == miss_layers.numpy_batch(stored)
    assert len(packed) == batch * len(miss_layers.SPEC.features) * 4


async def test_every_case_is_timed() -> None:
    results = await miss_layers.measure_service(batch=3, batches=5, rounds=1)
    results |= miss_layers.measure_rows(batch=3, batches=5, rounds=1)
    assert len(results) == 5
    assert all(len(rounds) == 1 and rounds[0] > 0 for rounds in results.values())
