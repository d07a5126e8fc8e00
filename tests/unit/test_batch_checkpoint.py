"""Checkpoint layout and state: job ids, keys, chunking, the done bitmap, resumability."""

from __future__ import annotations

import pytest

from gateway.batch.checkpoint import (
    FailedChunk,
    Failure,
    JobConfig,
    JobKeys,
    check_job_id,
    chunk_bounds,
    chunk_count,
    decode_done,
    default_job_id,
)
from gateway.batch.errors import CheckpointMismatch
from gateway.batch.sharding import Shard

CONFIG = JobConfig("fraud_scorer", "1", "file:/data/cards.csv:100:7", "0/4", 1024)


def test_default_job_id_follows_model_version_and_source() -> None:
    job_id = default_job_id("fraud_scorer", "1", "feature-store:card")
    assert job_id == default_job_id("fraud_scorer", "1", "feature-store:card")
    assert job_id.startswith("fraud_scorer-v1-")
    assert default_job_id("fraud_scorer", "2", "feature-store:card") != job_id
    assert default_job_id("fraud_scorer", "1", "file:/a.csv:1:2") != job_id
    assert check_job_id(job_id) == job_id


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 201, "-leading"])
def test_check_job_id_rejects_what_cannot_be_a_key_part(bad: str) -> None:
    with pytest.raises(ValueError, match="job id"):
        check_job_id(bad)


def test_job_keys_are_per_job_and_shard() -> None:
    keys = JobKeys.of("nightly-29012345", Shard(3, 8))
    assert keys.done == "gw:batch:nightly-29012345:3-of-8:done"
    assert len(set(keys.all())) == len(keys.all()) == 9
    assert JobKeys.of("nightly-29012345", Shard(4, 8)).done != keys.done


@pytest.mark.parametrize(
    ("total", "size", "chunks"), [(0, 4, 0), (1, 4, 1), (8, 4, 2), (10, 4, 3), (10, 1024, 1)]
)
def test_chunk_count(total: int, size: int, chunks: int) -> None:
    assert chunk_count(total, size) == chunks


def test_chunk_bounds_cover_every_position_once() -> None:
    bounds = [chunk_bounds(k, 10, 4) for k in range(chunk_count(10, 4))]
    assert bounds == [(0, 4), (4, 8), (8, 10)]
    with pytest.raises(IndexError):
        chunk_bounds(3, 10, 4)


def test_decode_done_reads_redis_bit_order() -> None:
    # SETBIT key 0 1 → 0x80; SETBIT key 9 1 → second byte 0x40.
    assert decode_done(b"\x80\x40", 12).tolist() == [
        True, False, False, False, False, False, False, False, False, True, False, False,
    ]  # fmt: skip
    assert decode_done(b"", 3).tolist() == [False, False, False]
    assert decode_done(b"\xff", 2).tolist() == [True, True]


def test_resume_with_the_same_configuration_is_allowed() -> None:
    CONFIG.check_resumable("job", CONFIG.as_meta() | {"status": "running", "created_at": "1.0"})


def test_resume_with_another_batch_size_names_the_difference() -> None:
    meta = CONFIG.as_meta() | {"batch_size": "512"}
    with pytest.raises(CheckpointMismatch, match=r"batch_size: '512' there, '1024' now"):
        CONFIG.check_resumable("job", meta)


def test_failure_records_round_trip() -> None:
    failure = Failure("card-1", "amount=-1 is outside [0, 1000000]")
    assert Failure.decode(failure.encode()) == failure
    chunk = FailedChunk(1024, "InferenceUnavailable: down", ("card-1", "card-2"))
    assert FailedChunk.decode(chunk.encode()) == chunk
