"""File source: reading, sharding, id and time checks, deterministic chunks (no Redis)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.batch.checkpoint import CheckpointState
from gateway.batch.errors import SourceError
from gateway.batch.sharding import ALL, Shard
from gateway.batch.sources import FileSource, _columns_from_csv, check_entity_ids
from gateway.errors import InvalidRequest
from gateway.spec import ModelSpec, load_specs
from gateway.validation import parse_entity_id

ROOT = Path(__file__).resolve().parents[2]
STARTED_AT = 1_700_000_000.0


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_specs(ROOT / "config/models.yaml")["fraud_scorer"]


async def loaded(path: Path, spec: ModelSpec, shard: Shard = ALL, batch: int = 3) -> FileSource:
    source = FileSource(path, spec, shard, batch)
    await source.prepare(CheckpointState(created_at=STARTED_AT), "t", lambda _: None)
    return source


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_csv_rows_become_chunks_in_file_order(tmp_path: Path, spec: ModelSpec) -> None:
    rows = [f"00{i},{10 + i},{i}" for i in range(7)]
    source = await loaded(
        write_csv(tmp_path / "a.csv", ["card_id,amount,hour_of_day", *rows]), spec
    )
    assert source.total == 7
    chunks = [await source.read_chunk(k) for k in range(3)]
    assert [c.entity_ids for c in chunks] == [["000", "001", "002"], ["003", "004", "005"], ["006"]]
    assert chunks[1].matrix[:, 0].tolist() == [13.0, 14.0, 15.0]  # ids stay text: "003"
    assert all(c.valid.all() for c in chunks)
    # no event_time column: the job's start time is the features' as-of time
    assert chunks[0].features_at.tolist() == [STARTED_AT] * 3


async def test_invalid_rows_are_reported_with_row_numbers_and_never_stop_the_load(
    tmp_path: Path, spec: ModelSpec
) -> None:
    lines = [
        "card_id,amount,hour_of_day",
        "c1,10,1",
        ",10,1",  # no id
        "c1,11,2",  # duplicate
        "c4,-5,1",  # out of bounds
        "c5,10,1.5",  # not an integer
        "has space,10,1",
    ]
    source = await loaded(write_csv(tmp_path / "bad.csv", lines), spec, batch=10)
    chunk = await source.read_chunk(0)
    assert chunk.valid.tolist() == [True, False, False, False, False, False]
    assert chunk.entity_ids[:2] == ["c1", "row 2"]
    assert chunk.reasons == {
        1: "entity id is missing",
        2: "duplicate entity id 'c1' (first at row 1)",
        3: "amount=-5 is outside [0, 1000000]",
        4: "hour_of_day must be an integer, got 1.5",
        5: "entity id must not contain whitespace or control characters",
    }


async def test_shards_of_a_file_split_it_exactly_once(tmp_path: Path, spec: ModelSpec) -> None:
    path = write_csv(
        tmp_path / "s.csv", ["card_id,amount", *(f"card-{i:06d},{i}" for i in range(1, 101))]
    )
    seen: list[str] = []
    for index in range(3):
        source = await loaded(path, spec, Shard(index, 3), batch=1000)
        ids = (await source.read_chunk(0)).entity_ids if source.total else []
        assert all(Shard(index, 3).owns(i) for i in ids)
        seen += ids
    assert sorted(seen) == [f"card-{i:06d}" for i in range(1, 101)]


async def test_parquet_event_time_is_the_features_as_of_time(
    tmp_path: Path, spec: ModelSpec
) -> None:
    now = time.time()
    table = pa.table(
        {
            "card_id": pa.array([1, 2, 3, 4]),  # numeric ids become text
            "amount": pa.array([1.0, 2.0, 3.0, 4.0]),
            "event_time": pa.array(
                [int(now - 60) * 10**6, None, int(now + 3600) * 10**6, -1 * 10**6],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "unrelated": pa.array(["x", "y", "z", "w"]),  # extra columns are ignored
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    chunk = await (await loaded(tmp_path / "t.parquet", spec, batch=10)).read_chunk(0)
    assert chunk.entity_ids[:2] == ["1", "2"]
    assert chunk.features_at[:2].tolist() == [int(now - 60), STARTED_AT]
    assert chunk.valid.tolist() == [True, True, False, False]
    assert "in the future" in chunk.reasons[2]
    assert "positive" in chunk.reasons[3]


async def test_text_event_times_follow_the_loaders_rules(tmp_path: Path, spec: ModelSpec) -> None:
    table = pa.table(
        {
            "card_id": ["a", "b"],
            "amount": [1.0, 2.0],
            "event_time": ["2024-05-01T12:00:00Z", "yesterday"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    chunk = await (await loaded(tmp_path / "t.parquet", spec, batch=10)).read_chunk(0)
    assert chunk.features_at[0] == 1714564800.0
    assert chunk.valid.tolist() == [True, False]
    assert "not an RFC 3339 timestamp" in chunk.reasons[1]


async def test_a_file_without_a_required_column_cannot_be_scored(
    tmp_path: Path, spec: ModelSpec
) -> None:
    with pytest.raises(SourceError, match=r"required feature\(s\) \['amount'\]"):
        await loaded(write_csv(tmp_path / "n.csv", ["card_id,hour_of_day", "a,1"]), spec)
    with pytest.raises(SourceError, match="no entity key column 'card_id'"):
        await loaded(write_csv(tmp_path / "k.csv", ["id,amount", "a,1"]), spec)
    with pytest.raises(SourceError, match="unsupported file type"):
        FileSource(tmp_path / "x.json", spec, ALL, 10)
    with pytest.raises(SourceError, match="cannot read"):
        FileSource(tmp_path / "missing.csv", spec, ALL, 10)


def test_source_identity_changes_with_the_file(tmp_path: Path, spec: ModelSpec) -> None:
    path = write_csv(tmp_path / "i.csv", ["card_id,amount", "a,1"])
    before = FileSource(path, spec, ALL, 10).identity
    assert FileSource(path, spec, ALL, 10).identity == before
    write_csv(path, ["card_id,amount", "a,2", "b,3"])
    assert FileSource(path, spec, ALL, 10).identity != before


@pytest.mark.parametrize(
    "entity_id", ["card-1", "", "x" * 128, "x" * 129, "a b", "a\tb", "a\u00a0b", "é", "a\x00"]
)
def test_entity_id_checks_agree_with_the_api(entity_id: str, spec: ModelSpec) -> None:
    try:
        parse_entity_id(spec, entity_id, "entity_id")
        accepted = True
    except InvalidRequest:
        accepted = False
    _, reasons = check_entity_ids(spec, [entity_id], [1])
    assert (not reasons) == accepted


def test_stored_features_parse_from_the_csv_reply() -> None:
    columns = _columns_from_csv(b"1.5,,1700000000.25\n,inf,", ["a", "b", "_ts"], 2)
    assert columns is not None
    assert columns["a"].values[0] == 1.5
    assert math.isnan(columns["a"].values[1])
    assert columns["b"].missing.tolist() == [True, False]
    assert np.isinf(columns["b"].values[1])
    assert columns["_ts"].values[0] == 1700000000.25
    # a value the CSV form cannot carry: the caller falls back to literal HMGET replies
    assert _columns_from_csv(b"1,x,2\n", ["a", "b", "_ts"], 1) is None
    assert _columns_from_csv(b"1,2,3,4\n", ["a", "b", "_ts"], 1) is None
