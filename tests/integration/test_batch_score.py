"""``python -m gateway batch-score`` against a real redis-server and a real tritonserver.

The job runs in-process through the CLI entry point (``gateway.__main__.main``), except where
a test needs a process to kill. This module has its own Redis (the feature-store source scans
the whole namespace, so it must not see other tests' entities).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import redis
import tritonclient.grpc as triton_grpc

from devstack.redis_server import RedisServer
from gateway.__main__ import main
from gateway.batch import sources
from gateway.batch.checkpoint import JobConfig, JobKeys
from gateway.batch.sharding import ALL, Shard
from gateway.batch.sources import FeatureStoreSource
from gateway.batch.store import BatchStore
from gateway.config import RedisSettings
from gateway.errors import FeatureStoreUnavailable
from gateway.store import open_redis
from tests.integration.conftest import DEMO_FEATURES, MODEL_REPOSITORY, SPEC_PATH, wait_until
from tests.integration.helpers import fraud_spec, reference_score
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PREDICTIONS = "gw:p:fraud_scorer:{version}:*"


@pytest.fixture(scope="module")
def batch_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def kv(batch_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(batch_redis.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def stack(
    batch_redis: RedisServer, triton_server: TritonServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment of a batch-score process (and of in-process runs) against the stack."""
    env = {
        "GATEWAY_REDIS__URL": batch_redis.url,
        "GATEWAY_TRITON__URL": triton_server.grpc_url,
        "GATEWAY_SPEC_PATH": str(SPEC_PATH),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GATEWAY_BATCH_JOB_ID", raising=False)
    return env


@pytest.fixture(autouse=True)
def _keep_pytest_logging() -> Iterator[None]:
    # The CLI configures JSON logging on the root logger, as the gateway does.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def process_env(stack: dict[str, str], **changes: str) -> dict[str, str]:
    """Environment of a batch-score subprocess. PROMETHEUS_MULTIPROC_DIR is dropped: a unit
    test of the metrics module can leave it pointing at a removed directory, and the job has
    no use for the gateway's multi-worker metrics files."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, **stack, **changes}


def wait_for_chunks(
    kv: redis.Redis, counts: str, at_least: int, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Until the job's checkpoint counts ``at_least`` committed chunks; its log if it died."""
    wait_until(
        lambda: int(kv.hget(counts, "chunks") or 0) >= at_least or process.poll() is not None,
        timeout_s=30,
    )
    assert process.poll() is None, log.read_text()[-3000:]


def kill_mid_run(
    stack: dict[str, str], kv: redis.Redis, args: list[str], counts: str, tmp_path: Path
) -> int:
    """Start ``batch-score`` with ``args``, SIGKILL it once chunks are committed; returns how
    many entities its committed chunks scored."""
    log = tmp_path / "first-run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "batch-score", "--model", "fraud_scorer", *args],
            env=process_env(stack),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_chunks(kv, counts, 60, process, log)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return int(kv.hget(counts, "scored") or 0)


def batch_score(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    status = main(["batch-score", "--model", "fraud_scorer", "--json", "--progress", "off", *args])
    out = capsys.readouterr().out
    return status, orjson.loads(out.strip().splitlines()[-1])


def reindex(capsys: pytest.CaptureFixture[str]) -> int:
    """``python -m gateway reindex-features`` for the model's namespace (in-process)."""
    status = main(["reindex-features", "--model", "fraud_scorer"])
    capsys.readouterr()
    return status


def cards(n: int, seed: int = 1, prefix: str = "card-t") -> pa.Table:
    """n valid entities; a few optional features left out, so defaults are used too."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "card_id": [f"{prefix}{i:07d}" for i in range(n)],
            "amount": np.round(rng.lognormal(3.8, 1.0, n), 2),
            "hour_of_day": rng.integers(0, 24, n),
            "merchant_category_risk": np.round(rng.random(n), 3),
            "is_online": rng.integers(0, 2, n),
            "txn_count_24h": rng.integers(0, 20, n),
            "account_age_days": rng.integers(0, 5000, n),
        }
    )


def expected_matrix(table: pa.Table) -> npt.NDArray[np.float32]:
    columns = []
    for feature in fraud_spec().features:
        if feature.name in table.column_names:
            columns.append(table.column(feature.name).to_numpy().astype(np.float32))
        else:
            columns.append(np.full(table.num_rows, feature.default, dtype=np.float32))
    return np.column_stack(columns)


def triton_answers(
    url: str, matrix: npt.NDArray[np.float32], version: str = "1"
) -> npt.NDArray[np.float32]:
    """Triton's own answer for each row, asked directly (no gateway code involved)."""
    client = triton_grpc.InferenceServerClient(url)
    try:
        out = []
        for start in range(0, len(matrix), 1024):
            rows = np.ascontiguousarray(matrix[start : start + 1024])
            tensor = triton_grpc.InferInput("features", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            result = client.infer(
                "fraud_scorer",
                [tensor],
                model_version=version,
                outputs=[triton_grpc.InferRequestedOutput("fraud_probability")],
            )
            out.append(result.as_numpy("fraud_probability")[:, 0])
        return np.concatenate(out)
    finally:
        client.close()


def stored_predictions(kv: redis.Redis, ids: list[str], version: str = "1") -> list[Any]:
    keys = [f"gw:p:fraud_scorer:{version}:{i}" for i in ids]
    values: list[Any] = []
    for start in range(0, len(keys), 10_000):
        values += kv.mget(keys[start : start + 10_000])
    return [None if v is None else orjson.loads(v) for v in values]


def prediction_count(kv: redis.Redis, version: str = "1") -> int:
    return sum(1 for _ in kv.scan_iter(PREDICTIONS.format(version=version), count=10_000))


def test_csv_file_scores_every_entity_as_triton_does_and_rerun_has_nothing_to_do(
    stack: dict[str, str],
    kv: redis.Redis,
    triton_server: TritonServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = pa_csv.read_csv(
        DEMO_FEATURES, convert_options=pa_csv.ConvertOptions(column_types={"card_id": pa.string()})
    )
    ids = table.column("card_id").to_pylist()
    before = time.time()

    status, summary = batch_score(capsys, "--source", str(DEMO_FEATURES))

    after = time.time()
    assert status == 0
    assert summary["outcome"] == "complete"
    assert (summary["entities"], summary["scored"], summary["skipped"]) == (len(ids), len(ids), 0)
    assert summary["job"] == {"scored": len(ids), "invalid": 0, "stale": 0, "failed": 0}
    records = stored_predictions(kv, ids)
    assert all(r is not None for r in records)
    scores = np.array([r["s"][0] for r in records])
    np.testing.assert_allclose(
        scores, triton_answers(triton_server.grpc_url, expected_matrix(table)), atol=1e-6
    )
    row = {name: table.column(name)[42].as_py() for name in table.column_names[1:]}
    assert scores[42] == pytest.approx(reference_score(row), abs=1e-6)
    assert {r["v"] for r in records} == {"1"}
    assert all(before <= r["t"] <= after for r in records)
    # no event_time column: the features are as of the job's start
    assert len({r["f"] for r in records}) == 1
    assert before <= records[0]["f"] <= records[0]["t"]
    assert 86_000 < kv.ttl(f"gw:p:fraud_scorer:1:{ids[0]}") <= 86_400

    status, again = batch_score(capsys, "--source", str(DEMO_FEATURES))
    assert status == 0
    assert again["outcome"] == "nothing-to-do"
    assert (again["scored"], again["skipped"]) == (0, len(ids))

    status, restarted = batch_score(capsys, "--source", str(DEMO_FEATURES), "--restart")
    assert (status, restarted["scored"], restarted["skipped"]) == (0, len(ids), 0)


def test_parquet_file_uses_event_time_and_reports_invalid_rows(
    stack: dict[str, str],
    kv: redis.Redis,
    triton_server: TritonServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = cards(500)
    event_times = np.arange(500, dtype=np.float64) + 1_700_000_000
    table = good.append_column("event_time", pa.array(event_times))
    bad = pa.table(
        {
            "card_id": ["card-bad-amount", None, "card-t0000001", "card-no-amount"],
            "amount": [-3.0, 10.0, 10.0, None],
            "hour_of_day": [1, 1, 1, 1],
            "merchant_category_risk": [0.1] * 4,
            "is_online": [0] * 4,
            "txn_count_24h": [1] * 4,
            "account_age_days": [10] * 4,
            "event_time": [1_700_000_000.0] * 4,
        },
        schema=table.schema,
    )
    path = tmp_path / "cards.parquet"
    pq.write_table(pa.concat_tables([table, bad]), path)

    status, summary = batch_score(capsys, "--source", str(path), "--batch-size", "128")

    assert status == 1  # invalid rows are failures
    assert (summary["scored"], summary["invalid"], summary["failed"]) == (500, 4, 0)
    assert summary["job"] == {"scored": 500, "invalid": 4, "stale": 0, "failed": 0}
    reasons = {f["entity"]: f["reason"] for f in summary["failures"]}
    assert reasons == {
        "card-bad-amount": "amount=-3.0 is outside [0, 1000000]",
        "row 502": "entity id is missing",
        "row 503": "duplicate entity id 'card-t0000001' (first at row 2)",
        "card-no-amount": "missing required feature 'amount' (empty cell, no declared default)",
    }
    ids = good.column("card_id").to_pylist()
    records = stored_predictions(kv, ids)
    assert [r["f"] for r in records] == event_times.tolist()
    scores = np.array([r["s"][0] for r in records])
    np.testing.assert_allclose(
        scores, triton_answers(triton_server.grpc_url, expected_matrix(good)), atol=1e-6
    )
    assert stored_predictions(kv, ["card-bad-amount", "card-no-amount"]) == [None, None]
    assert prediction_count(kv) == 500


def load_feature_store(kv: redis.Redis, table: pa.Table, written_at: float) -> list[float]:
    """HSET each entity's features with its own event time (``_ts``), as the loader stores them."""
    names = [c for c in table.column_names if c != "card_id"]
    rows = table.to_pylist()
    times = [written_at + i for i in range(len(rows))]
    pipe = kv.pipeline(transaction=False)
    for row, at in zip(rows, times, strict=True):
        mapping = {name: repr(float(row[name])) for name in names if row[name] is not None}
        mapping["_ts"] = repr(at)
        pipe.hset(f"gw:f:card:{row['card_id']}", mapping=mapping)
    pipe.execute()
    return times


def test_feature_store_source_scores_every_stored_entity(
    stack: dict[str, str],
    kv: redis.Redis,
    triton_server: TritonServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = cards(3000, seed=2)
    times = load_feature_store(kv, table, 1_700_000_000.0)
    kv.hset("gw:f:card:card-without-amount", mapping={"hour_of_day": "3", "_ts": "1.0"})
    ids = table.column("card_id").to_pylist()

    status, summary = batch_score(capsys, "--source", "feature-store", "--batch-size", "500")

    assert status == 1
    assert summary["snapshot"] == "scan"  # written around the gateway's writer: no index
    assert (summary["entities"], summary["scored"], summary["invalid"]) == (3001, 3000, 1)
    assert summary["failures"] == [
        {
            "entity": "card-without-amount",
            "reason": "feature 'amount' has no usable stored value and no declared default",
        }
    ]
    records = stored_predictions(kv, ids)
    assert [r["f"] for r in records] == times  # the features' own event times
    scores = np.array([r["s"][0] for r in records])
    np.testing.assert_allclose(
        scores, triton_answers(triton_server.grpc_url, expected_matrix(table)), atol=1e-6
    )
    # the snapshot is dropped once the job is complete; the rest of the checkpoint stays
    assert not list(kv.scan_iter("gw:batch:*:ids"))
    assert list(kv.scan_iter("gw:batch:*:counts"))


def scored_ids(kv: redis.Redis) -> set[str]:
    prefix = len("gw:p:fraud_scorer:1:")
    return {
        k.decode()[prefix:] for k in kv.scan_iter(PREDICTIONS.format(version="1"), count=10_000)
    }


def test_shards_split_the_work_exactly_once_and_alike_for_file_and_feature_store(
    stack: dict[str, str], kv: redis.Redis, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = cards(4000, seed=3)
    path = tmp_path / "cards.csv"
    pa_csv.write_csv(table, path)
    everyone = set(table.column("card_id").to_pylist())

    status0, shard0 = batch_score(capsys, "--source", str(path), "--shard", "0/2")
    first = scored_ids(kv)
    status1, shard1 = batch_score(capsys, "--source", str(path), "--shard", "1/2")
    second = scored_ids(kv) - first

    assert status0 == status1 == 0
    assert first | second == everyone
    assert not first & second
    assert shard0["scored"] + shard1["scored"] == len(everyone)
    assert shard0["job_id"] == shard1["job_id"]  # one job, two shards with their own state

    kv.delete(*kv.keys("gw:p:*"))
    load_feature_store(kv, table, 1_700_000_000.0)
    status, from_scan = batch_score(capsys, "--source", "feature-store", "--shard", "0/2")
    assert (status, from_scan["snapshot"]) == (0, "scan")
    assert scored_ids(kv) == first
    # the other shard lists the same namespace from the id index: the same split
    assert reindex(capsys) == 0
    status, from_index = batch_score(capsys, "--source", "feature-store", "--shard", "1/2")
    assert (status, from_index["snapshot"]) == (0, "index")
    assert scored_ids(kv) - first == second


def test_crash_and_resume_scores_every_entity_exactly_once(
    stack: dict[str, str],
    kv: redis.Redis,
    triton_server: TritonServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    n, batch = 100_000, 256
    table = cards(n, seed=4)
    path = tmp_path / "cards.parquet"
    pq.write_table(table, path)
    args = ["--source", str(path), "--batch-size", str(batch), "--job-id", "crash-test"]
    committed = kill_mid_run(stack, kv, args, "gw:batch:crash-test:0-of-1:counts", tmp_path)
    assert 0 < committed < n, "the job was not killed mid-run"
    assert committed % batch == 0  # whole chunks only
    assert prediction_count(kv) == committed  # nothing half-written, nothing unrecorded

    status, summary = batch_score(capsys, *args)

    assert status == 0
    assert summary["skipped"] == committed
    assert summary["scored"] == n - committed
    assert summary["job"] == {"scored": n, "invalid": 0, "stale": 0, "failed": 0}
    assert prediction_count(kv) == n
    records = stored_predictions(kv, table.column("card_id").to_pylist())
    scores = np.array([r["s"][0] for r in records])
    np.testing.assert_allclose(
        scores, triton_answers(triton_server.grpc_url, expected_matrix(table)), atol=1e-6
    )


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton of its own serving fraud_scorer versions 1 and 2; tests may stop it."""
    repository = tmp_path_factory.mktemp("models")
    shutil.copytree(MODEL_REPOSITORY / "fraud_scorer", repository / "fraud_scorer")
    shutil.copytree(repository / "fraud_scorer/1", repository / "fraud_scorer/2")
    server = TritonServer(repository)
    server.start()
    try:
        yield server
    finally:
        server.kill()  # a graceful stop takes ~4 s; nothing of this server needs to survive


@pytest.fixture
def latest_spec(tmp_path: Path, stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    spec = tmp_path / "models.yaml"
    spec.write_text(SPEC_PATH.read_text().replace('version: "1"', 'version: "latest"'))
    monkeypatch.setenv("GATEWAY_SPEC_PATH", str(spec))
    return spec


def test_predictions_are_keyed_by_the_served_version(
    latest_spec: Path,
    two_versions: TritonServer,
    kv: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GATEWAY_TRITON__URL", two_versions.grpc_url)
    table = cards(300, seed=5)
    path = tmp_path / "cards.csv"
    pa_csv.write_csv(table, path)

    status, summary = batch_score(capsys, "--source", str(path))

    assert status == 0
    assert summary["version"] == "2"
    assert summary["job_id"].startswith("fraud_scorer-v2-")
    records = stored_predictions(kv, table.column("card_id").to_pylist(), version="2")
    assert {r["v"] for r in records} == {"2"}
    assert prediction_count(kv, version="1") == 0


def test_triton_outage_fails_chunks_and_the_next_run_retries_them(
    latest_spec: Path,
    two_versions: TritonServer,
    kv: redis.Redis,
    stack: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_TRITON__URL", two_versions.grpc_url)
    n = 40_000
    table = cards(n, seed=6)
    path = tmp_path / "cards.parquet"
    pq.write_table(table, path)
    args = ["--source", str(path), "--batch-size", "64", "--job-id", "outage"]
    args += ["--retries", "1", "--retry-backoff-s", "0.01", "--triton-timeout-s", "2"]
    env = process_env(
        stack, GATEWAY_SPEC_PATH=str(latest_spec), GATEWAY_TRITON__URL=two_versions.grpc_url
    )
    log = tmp_path / "first-run.log"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "batch-score", "--model", "fraud_scorer", "--json",
             "--progress", "off", *args],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=errors,
        )  # fmt: skip
    try:
        wait_for_chunks(kv, "gw:batch:outage:0-of-1:counts", 20, process, log)
        two_versions.kill()  # an outage as abrupt as a crash
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        two_versions.start()
    summary = orjson.loads(out)

    assert process.returncode == 1
    assert summary["outcome"] == "incomplete"
    assert summary["failed"] > 0
    assert summary["scored"] + summary["failed"] == n  # every entity committed or failed
    assert summary["job"]["failed"] == summary["failed"]
    assert any("InferenceUnavailable" in f["reason"] for f in summary["failures"])
    assert prediction_count(kv, version="2") == summary["scored"]

    status, rerun = batch_score(capsys, *args)

    assert status == 0
    assert rerun["outcome"] == "complete"
    assert rerun["skipped"] == summary["scored"]
    assert rerun["scored"] == summary["failed"]
    assert rerun["job"] == {"scored": n, "invalid": 0, "stale": 0, "failed": 0}
    assert prediction_count(kv, version="2") == n


def test_a_job_that_cannot_run_as_asked_exits_2_and_writes_nothing(
    stack: dict[str, str],
    kv: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "cards.csv"
    pa_csv.write_csv(cards(50, seed=7), path)
    base = ["batch-score", "--model", "fraud_scorer", "--source", str(path), "--progress", "off"]

    too_big = main([*base, "--batch-size", "2048"])
    assert too_big == 2
    assert "exceeds Triton's max_batch_size 1024" in capsys.readouterr().err

    assert main([*base, "--batch-size", "10"]) == 0
    other_chunks = main([*base, "--batch-size", "20"])
    assert other_chunks == 2
    assert "batch_size: '10' there, '20' now" in capsys.readouterr().err

    assert main(["batch-score", "--model", "no_such_model", "--source", str(path)]) == 2
    missing = str(tmp_path / "missing.parquet")
    assert main(["batch-score", "--model", "fraud_scorer", "--source", missing]) == 2
    assert prediction_count(kv) == 50  # only the one valid run wrote anything


# -- id index, freshness ---------------------------------------------------------------------

INDEX, INDEX_COMPLETE = "gw:fi:card", "gw:fi:card:complete"


def test_reindexed_namespace_is_listed_from_the_index_with_the_same_results(
    stack: dict[str, str], kv: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    table = cards(3000, seed=8)
    load_feature_store(kv, table, 1_700_000_000.0)  # around the writer: not indexed
    kv.hset("gw:f:card:card-without-amount", mapping={"hour_of_day": "3", "_ts": "1.0"})
    kv.zadd(INDEX, {"card-t0000007": 0, "card-deleted-by-hand": 0})  # a partial index
    status, by_scan = batch_score(capsys, "--source", "feature-store", "--batch-size", "500")
    assert by_scan["snapshot"] == "scan"  # the index is not marked complete: not trusted
    scanned = stored_predictions(kv, table.column("card_id").to_pylist())

    capsys.readouterr()
    assert main(["reindex-features", "--model", "fraud_scorer"]) == 0
    out = capsys.readouterr().out
    assert "3,001 entities indexed (3,000 added, 1 without features removed" in out
    assert kv.zcard(INDEX) == 3001
    assert kv.zscore(INDEX, "card-deleted-by-hand") is None
    assert kv.exists(INDEX_COMPLETE) == 1
    assert main(["reindex-features", "--model", "no_such_model"]) == 2

    status, by_index = batch_score(
        capsys, "--source", "feature-store", "--batch-size", "500", "--restart"
    )

    assert status == 1  # the entity without amount, as before
    assert by_index["snapshot"] == "index"
    for key in ("entities", "scored", "invalid"):
        assert by_index[key] == by_scan[key]
    assert by_index["failures"] == by_scan["failures"]
    indexed = stored_predictions(kv, table.column("card_id").to_pylist())
    assert [r["s"] for r in indexed] == [r["s"] for r in scanned]
    assert [r["f"] for r in indexed] == [r["f"] for r in scanned]
    assert not list(kv.scan_iter("gw:batch:*:ids"))  # the snapshot is dropped when complete


def test_writers_keep_the_index_complete_after_one_reindex(
    stack: dict[str, str], kv: redis.Redis, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert reindex(capsys) == 0  # a new deployment: nothing to index yet
    table = cards(700, seed=9)
    path = tmp_path / "cards.csv"
    pa_csv.write_csv(table, path)

    assert main(["load-features", "--model", "fraud_scorer", "--file", str(path)]) == 0
    status, summary = batch_score(capsys, "--source", "feature-store", "--batch-size", "128")

    assert status == 0
    assert summary["snapshot"] == "index"
    assert (summary["entities"], summary["scored"]) == (700, 700)
    assert scored_ids(kv) == set(table.column("card_id").to_pylist())


def load_indexed(kv: redis.Redis, n: int, seed: int) -> list[str]:
    """n entities written straight to Redis (fast), then indexed as reindex-features would."""
    table = cards(n, seed=seed)
    load_feature_store(kv, table, time.time() - 60)
    ids: list[str] = table.column("card_id").to_pylist()
    for start in range(0, n, 10_000):
        kv.zadd(INDEX, dict.fromkeys(ids[start : start + 10_000], 0))
    kv.set(INDEX_COMPLETE, "1")
    return ids


async def test_index_snapshot_resumes_after_a_crash_and_lists_each_id_once(
    batch_redis: RedisServer, kv: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = sorted(f"card-s{i:05d}" for i in range(12_345))
    kv.zadd(INDEX, dict.fromkeys(ids, 0))
    kv.set(INDEX_COMPLETE, "1")
    monkeypatch.setattr(sources, "INDEX_PAGE", 1000)
    config = JobConfig("fraud_scorer", "1", "feature-store:card", "0/1", 100)

    async def snapshot_until(
        store: BatchStore, shard: Shard, fail_after: int | None
    ) -> FeatureStoreSource:
        """Take (or continue) the snapshot; the page save after ``fail_after`` is applied in
        Redis but its reply is lost, as when the job is killed right after the call."""
        calls = 0
        copy, add = BatchStore.copy_index_page, BatchStore.add_index_page

        async def lost_reply(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            result = await (copy if shard.is_everything else add)(store, *args, **kwargs)
            if fail_after is not None and calls > fail_after:
                raise FeatureStoreUnavailable("connection reset")
            return result

        name = "copy_index_page" if shard.is_everything else "add_index_page"
        monkeypatch.setattr(store, name, lost_reply)
        token = f"t{fail_after}"
        state = await store.open("job", config, token)
        source = FeatureStoreSource(store, fraud_spec(), shard, 100)
        await source.prepare(state, token, lambda _: None)
        return source

    for shard in (ALL, Shard(1, 3)):
        expected = [i for i in ids if shard.owns(i)]
        async with open_redis(RedisSettings(url=batch_redis.url)) as client:
            store = BatchStore(client, JobKeys.of("job", shard), state_ttl_s=600)
            with pytest.raises(FeatureStoreUnavailable):
                await snapshot_until(store, shard, fail_after=4)
            state = await store.read_state()
            assert (state.snapshot_mode, state.snapshot_complete) == ("index", False)
            assert state.snapshot_cursor == ids[5 * 1000 - 1].encode()  # the 5th page saved

            source = await snapshot_until(store, shard, fail_after=None)

            assert source.total == len(expected)
            raw = kv.lrange(store.keys.ids, 0, -1)
            listed = [i.decode() if isinstance(i, bytes) else i for i in raw]
            assert listed == expected  # id order, every id once
            # saving a page again (a retried call) appends nothing
            assert not await store.add_index_page(
                "tNone", ids[3999].encode(), ids[4999].encode(), complete=False, ids=[b"x"]
            )
            assert kv.llen(store.keys.ids) == len(expected)


def test_crash_and_resume_on_an_index_snapshot_scores_every_entity_exactly_once(
    stack: dict[str, str], kv: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n, batch = 100_000, 256
    ids = load_indexed(kv, n, seed=10)
    args = ["--source", "feature-store", "--batch-size", str(batch), "--job-id", "fs-crash"]
    committed = kill_mid_run(stack, kv, args, "gw:batch:fs-crash:0-of-1:counts", tmp_path)
    assert 0 < committed < n, "the job was not killed mid-run"
    assert committed % batch == 0  # whole chunks only
    assert prediction_count(kv) == committed

    status, summary = batch_score(capsys, *args)

    assert status == 0
    assert summary["snapshot"] == "index"
    assert (summary["skipped"], summary["scored"]) == (committed, n - committed)
    assert summary["job"] == {"scored": n, "invalid": 0, "stale": 0, "failed": 0}
    assert prediction_count(kv) == n
    assert all(r is not None for r in stored_predictions(kv, ids))


@pytest.fixture
def rejecting_spec(tmp_path: Path, stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo spec with ``feature_freshness: {max_age_s: 1 day, on_violation: reject}``."""
    text = SPEC_PATH.read_text()
    assert "max_age_s: 604800" in text
    assert "on_violation: flag" in text
    spec = tmp_path / "models.yaml"
    spec.write_text(
        text.replace("max_age_s: 604800", "max_age_s: 86400").replace(
            "on_violation: flag", "on_violation: reject"
        )
    )
    monkeypatch.setenv("GATEWAY_SPEC_PATH", str(spec))
    return spec


def test_freshness_reject_leaves_old_features_unscored_and_counts_them_apart(
    rejecting_spec: Path,
    kv: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    now = time.time()
    fresh, old = cards(300, seed=11, prefix="card-f"), cards(40, seed=12, prefix="card-o")
    load_feature_store(kv, fresh, now - 3600)
    load_feature_store(kv, old, now - 2 * 86_400)
    kv.hset("gw:f:card:card-no-ts", mapping={"amount": "5"})  # unknown age: never too old
    fresh_ids = [*fresh.column("card_id").to_pylist(), "card-no-ts"]

    status, summary = batch_score(capsys, "--source", "feature-store", "--batch-size", "64")

    assert status == 0  # a policy outcome, not a failure to retry
    assert (summary["scored"], summary["stale"], summary["invalid"]) == (301, 40, 0)
    assert summary["job"] == {"scored": 301, "invalid": 0, "stale": 40, "failed": 0}
    assert scored_ids(kv) == set(fresh_ids)
    status, again = batch_score(capsys, "--source", "feature-store", "--batch-size", "64")
    assert (status, again["outcome"], again["skipped"]) == (0, "nothing-to-do", 341)

    # a file's event_time is its rows' as-of time: the same rule
    path = tmp_path / "cards.parquet"
    times = np.where(np.arange(100) < 10, now - 3 * 86_400, now - 60)
    rows = cards(100, seed=13, prefix="card-p").append_column("event_time", pa.array(times))
    pq.write_table(rows, path)
    status, from_file = batch_score(capsys, "--source", str(path))
    assert (status, from_file["scored"], from_file["stale"]) == (0, 90, 10)


def test_freshness_flag_scores_old_features_as_usual(
    stack: dict[str, str], kv: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    old_at = time.time() - 30 * 86_400  # older than the demo spec's week, which only flags
    table = cards(50, seed=14)
    times = load_feature_store(kv, table, old_at)

    status, summary = batch_score(capsys, "--source", "feature-store")

    assert status == 0
    assert (summary["scored"], summary["stale"]) == (50, 0)
    records = stored_predictions(kv, table.column("card_id").to_pylist())
    assert [r["f"] for r in records] == times  # written as usual, with their old as-of time
