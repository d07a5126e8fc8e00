"""Sharding: stable, and every entity in exactly one shard."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.batch.sharding import ALL, Shard, owned, parse_shard, shard_mask, shard_of

IDS = [f"card-{i:06d}" for i in range(1, 5001)]


@pytest.mark.parametrize(
    ("text", "shard"), [("0/1", ALL), ("3/4", Shard(3, 4)), (" 1 / 2 ", Shard(1, 2))]
)
def test_parse_shard_reads_index_slash_count(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/2", "a/b", "1", "", "1/2/3"])
def test_parse_shard_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_shard_of_is_stable_across_processes_and_releases() -> None:
    # crc32 of the UTF-8 id: fixed by the algorithm, not by Python's salted hash().
    assert [shard_of(f"card-{i:06d}", 4) for i in range(1, 11)] == [2, 0, 2, 1, 3, 1, 3, 2, 0, 1]
    assert shard_of("card-000001", 1) == 0


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_partition_the_ids_exactly_once(count: int) -> None:
    owners = np.zeros(len(IDS), dtype=int)
    for index in range(count):
        owners += shard_mask(IDS, Shard(index, count)).astype(int)
    assert (owners == 1).all()


def test_shard_mask_agrees_with_owns_and_is_balanced() -> None:
    shard = Shard(2, 4)
    mask = shard_mask(IDS, shard)
    assert mask.tolist() == [shard.owns(i) for i in IDS]
    assert abs(int(mask.sum()) - len(IDS) / 4) < 0.1 * len(IDS) / 4


def test_missing_id_belongs_to_shard_zero_so_it_is_reported_once() -> None:
    assert shard_mask([None, ""], Shard(0, 3)).tolist() == [True, True]
    assert shard_mask([None], Shard(1, 3)).tolist() == [False]


@pytest.mark.parametrize("shard", [ALL, Shard(0, 3), Shard(2, 3)])
def test_owned_raw_ids_are_the_shard_mask_of_their_text(shard: Shard) -> None:
    ids = [*IDS[:500], "kärtchen-1"]
    raw = [i.encode() for i in ids]
    mask = shard_mask(ids, shard)
    assert owned(raw, shard) == [r for r, own in zip(raw, mask, strict=True) if own]
