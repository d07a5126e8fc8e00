"""``python -m benchmarks.batch_score``: the batch scoring job vs naive baselines, side by side.

Starts its own redis-server and tritonserver (CPU, Triton response cache off), generates
``--entities`` synthetic cards (deterministic), writes them to a CSV and a Parquet file, loads
them into the feature store with the gateway's own loader (which keeps the namespace's id
index) and runs ``reindex-features`` once (the one-off step that marks the index complete).
Then, ``--repeats`` times, interleaved so that a slow moment of the shared machine hits every
variant alike:

* job, CSV / Parquet / feature store: ``python -m gateway batch-score … --restart --json`` as a
  subprocess (defaults: batch 1024, 4 Triton calls in flight, checkpointed, exactly once); the
  feature store once more without the index (its completeness marker removed for that run,
  so the job lists the entities by SCAN, as for data written before the index existed), and
  once more as two ``--shard i/2`` processes side by side;
* baseline "naive": what one writes first: a Triton call per 64 rows, one after the other,
  and one ``SET`` (not pipelined) per prediction (on the first ``--naive-entities``);
* baseline "sequential": the gateway's online building blocks in a loop: a Triton call per 256
  rows (the API's batch limit) and ``RedisStore.write_predictions`` (one pipelined round trip
  per chunk), no overlap, no checkpoint.

Both baselines read the same CSV with pyarrow into one matrix (no validation: generous to
them), run in this process and write the same prediction records. Rates are entities per
second of the job's own clock (``elapsed_s``: connect, verify the model, read or snapshot,
score, commit); the process wall time (interpreter start and imports included) is shown too.
CPU seconds per 100k entities come from ``/proc`` (Redis, Triton's process tree) and rusage
(the job subprocess, or this process for the baselines). The figures and the machine go into
the marked section of ``docs/batch-scoring.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from benchmarks.run import cpu_seconds, machine_busy_seconds
from devstack.redis_server import RedisServer
from gateway.cache import CachedPrediction, prediction_key
from gateway.config import RedisSettings, TritonSettings
from gateway.features import index_complete_key
from gateway.spec import ModelSpec, load_specs
from triton_launcher.launcher import TritonServer

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "config/models.yaml"
DOC = ROOT / "docs/batch-scoring.md"
BEGIN, END = "<!-- batch-benchmark:begin -->", "<!-- batch-benchmark:end -->"
MODEL = "fraud_scorer"


def synthetic_cards(n: int, seed: int = 7) -> pa.Table:
    """``n`` plausible cards (every value within the spec's bounds), ids ``card-b0000001`` …"""
    rng = np.random.default_rng(seed)
    card_present = rng.random(n) < 0.7
    columns = {
        "card_id": [f"card-b{i:07d}" for i in range(1, n + 1)],
        "amount": np.round(np.clip(rng.lognormal(3.8, 1.0, n), 0.01, 1e6), 2),
        "hour_of_day": rng.integers(0, 24, n),
        "merchant_category_risk": np.round(rng.beta(2, 10, n), 3),
        "distance_from_home_km": np.round(np.clip(rng.exponential(15, n), 0, 20040), 1),
        "distance_from_last_txn_km": np.round(np.clip(rng.exponential(5, n), 0, 20040), 1),
        "card_present": card_present.astype(np.int64),
        "is_online": (~card_present).astype(np.int64),
        "foreign_transaction": (rng.random(n) < 0.05).astype(np.int64),
        "txn_count_1h": np.clip(rng.poisson(0.3, n), 0, 1000),
        "txn_count_24h": np.clip(rng.poisson(3, n), 0, 10000),
        "avg_amount_30d": np.round(np.clip(rng.lognormal(3.9, 0.6, n), 0.01, 1e6), 2),
        "account_age_days": rng.integers(0, 5000, n),
        "failed_auth_24h": np.clip(rng.poisson(0.05, n), 0, 100),
        "chargebacks_365d": np.clip(rng.poisson(0.02, n), 0, 100),
    }
    return pa.table(columns)


@dataclass
class Variant:
    key: str
    label: str
    run: Callable[[], dict[str, float]]
    results: list[dict[str, float]] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(r[name] for r in self.results)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.redis = RedisServer()
        self.triton = TritonServer(ROOT / "model_repository", cache_size_bytes=0)
        self.spec: ModelSpec = load_specs(SPEC)[MODEL]
        self.csv = work / "cards.csv"
        self.parquet = work / "cards.parquet"
        self.redis_pid = 0

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        started = time.perf_counter()
        table = synthetic_cards(self.args.entities)
        pa_csv.write_csv(table, self.csv)
        pq.write_table(table, self.parquet)
        print(f"generated {table.num_rows:,} cards in {time.perf_counter() - started:.1f}s")
        self.redis.start()
        self.triton.start()
        started = time.perf_counter()
        loaded, reindex_s = asyncio.run(self._load_feature_store())
        seconds = time.perf_counter() - started - reindex_s
        print(f"loaded {loaded:,} cards into the feature store in {seconds:.1f}s")
        print(f"reindex-features (once, marks the id index complete) took {reindex_s:.2f}s")

    async def _load_feature_store(self) -> tuple[int, float]:
        from gateway.batch.index import reindex_features
        from gateway.ingest import load_features
        from gateway.store import RedisStore, open_redis

        settings = RedisSettings(url=self.redis.url, socket_timeout_s=10)
        async with open_redis(settings) as client:
            self.redis_pid = int((await client.info("server"))["process_id"])
            report = await load_features(RedisStore(client), self.spec, self.csv)
            started = time.perf_counter()
            await reindex_features(client, self.spec.entity_namespace)
        return report.entities, time.perf_counter() - started

    def without_index(self) -> dict[str, float]:
        """The feature-store job as on data written before the index: the marker removed for
        this run only, so the job falls back to SCAN."""
        import redis

        marker = index_complete_key(self.spec.entity_namespace)
        client = redis.Redis.from_url(self.redis.url)
        try:
            value = client.get(marker)
            client.delete(marker)
            try:
                return self.job("feature-store", snapshot="scan")
            finally:
                client.set(marker, value or b"1")
        finally:
            client.close()

    def close(self) -> None:
        self.triton.stop()
        self.redis.close()

    # -- measurements ----------------------------------------------------------------------------
    def _stack_cpu(self) -> tuple[float, float, float]:
        triton_pid = self.triton.pid
        assert triton_pid is not None
        return cpu_seconds([self.redis_pid]), cpu_seconds([triton_pid]), machine_busy_seconds()

    def _measured(self, body: Callable[[], tuple[float, int, float]], own: str) -> dict[str, float]:
        who = resource.RUSAGE_CHILDREN if own == "children" else resource.RUSAGE_SELF
        usage0 = resource.getrusage(who)
        redis0, triton0, busy0 = self._stack_cpu()
        wall0 = time.perf_counter()
        elapsed_s, entities, prepare_s = body()
        wall_s = time.perf_counter() - wall0
        usage1 = resource.getrusage(who)
        redis1, triton1, busy1 = self._stack_cpu()
        client_s = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
        per = 100_000 / max(entities, 1)
        return {
            "entities": entities,
            "rate": entities / elapsed_s,
            "elapsed_s": elapsed_s,
            "prepare_s": prepare_s,
            "wall_s": wall_s,
            "cpu_client": client_s * per,
            "cpu_redis": (redis1 - redis0) * per,
            "cpu_triton": (triton1 - triton0) * per,
            "cpu_machine": (busy1 - busy0) * per,
        }

    def job(self, source: str, shards: int = 1, snapshot: str | None = None) -> dict[str, float]:
        """The CLI as ``shards`` processes in parallel (``--shard i/shards``); ``snapshot``:
        how a feature-store job must have listed its entities."""
        cmd = [sys.executable, "-m", "gateway", "batch-score", "--model", MODEL]
        cmd += ["--source", source, "--restart", "--json", "--progress", "off"]
        cmd += ["--batch-size", str(self.args.batch_size)]
        cmd += ["--concurrency", str(self.args.concurrency)]
        env = {
            **os.environ,
            "GATEWAY_REDIS__URL": self.redis.url,
            "GATEWAY_TRITON__URL": self.triton.grpc_url,
        }

        def body() -> tuple[float, int, float]:
            processes = [
                subprocess.Popen(
                    [*cmd, "--shard", f"{i}/{shards}"],
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for i in range(shards)
            ]
            summaries = []
            for process in processes:
                out, err = process.communicate()
                if process.returncode != 0:
                    raise RuntimeError(f"batch-score exited {process.returncode}: {err[-2000:]}")
                summaries.append(json.loads(out))
            # the variant measured what it says: listed from the index, or by SCAN
            assert {s["snapshot"] for s in summaries} == {snapshot}, summaries
            scored = sum(int(s["scored"]) for s in summaries)
            assert scored == self.args.entities, summaries
            # the shards ran side by side: the job took as long as the slowest one
            elapsed = max(float(s["elapsed_s"]) for s in summaries)
            prepare = max(float(s["prepare_s"]) for s in summaries)
            return elapsed, scored, prepare

        return self._measured(body, "children")

    def baseline(self, kind: str) -> dict[str, float]:
        def body() -> tuple[float, int, float]:
            return asyncio.run(self._baseline(kind))

        return self._measured(body, "self")

    async def _baseline(self, kind: str) -> tuple[float, int, float]:
        from gateway.startup import verify_models
        from gateway.store import RedisStore, open_redis
        from gateway.triton import TritonClient

        spec = self.spec
        triton_settings = TritonSettings(url=self.triton.grpc_url, timeout_s=10)
        redis_settings = RedisSettings(url=self.redis.url, socket_timeout_s=10)
        started = time.perf_counter()
        prepare_s = 0.0
        async with open_redis(redis_settings) as client, TritonClient(triton_settings) as triton:
            version = (
                await verify_models({MODEL: spec}, triton, url=triton_settings.url, wait_s=30)
            )[MODEL]
            table = pa_csv.read_csv(
                self.csv,
                convert_options=pa_csv.ConvertOptions(column_types={"card_id": pa.string()}),
            )
            ids: list[str] = table.column("card_id").to_pylist()
            matrix = np.column_stack(
                [table.column(f.name).to_numpy().astype(np.float32) for f in spec.features]
            )
            if kind == "naive":
                ids, matrix = ids[: self.args.naive_entities], matrix[: self.args.naive_entities]
            features_at = time.time()
            prepare_s = time.perf_counter() - started
            store = RedisStore(client)
            try:
                size = 64 if kind == "naive" else spec.max_batch_size
                for start in range(0, len(ids), size):
                    result = await triton.infer(spec, version, matrix[start : start + size])
                    now = time.time()
                    records = [
                        (ids[start + i], CachedPrediction(tuple(s), version, now, features_at))
                        for i, s in enumerate(result.scores.tolist())
                    ]
                    if kind == "naive":
                        for entity_id, record in records:
                            key = prediction_key(spec.name, version, entity_id)
                            await client.set(key, record.encode(), ex=spec.cache_ttl_s)
                    else:
                        await store.write_predictions(spec, records)
            finally:
                await store.aclose()
        return time.perf_counter() - started, len(ids), prepare_s


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs (shared with other work: load average "
        f"{load:.1f} at the end of the run), {platform.platform()}, Python "
        f"{platform.python_version()}; Redis, Triton (CPU, python backend running the ONNX "
        "model), the job and the baselines all on this one machine, over loopback"
    )


def report(bench: Bench, variants: list[Variant]) -> str:
    args = bench.args
    by = {v.key: v for v in variants}
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `python -m "
        f"benchmarks.batch_score --entities {args.entities} --repeats {args.repeats}` "
        f"(job: `--batch-size {args.batch_size} --concurrency {args.concurrency}`).",
        "",
        f"Machine: {machine()}.",
        "",
        f"| variant | entities | entities/s (median of {args.repeats}) | each run | job s "
        "(reading input) | process s | CPU s / 100k: client · Redis · Triton · whole machine |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for v in variants:
        runs = ", ".join(f"{r['rate']:,.0f}" for r in v.results)
        cpu = " · ".join(
            f"{v.median(k):.2f}" for k in ("cpu_client", "cpu_redis", "cpu_triton", "cpu_machine")
        )
        lines.append(
            f"| {v.label} | {int(v.median('entities')):,} | **{v.median('rate'):,.0f}** | {runs} | "
            f"{v.median('elapsed_s'):.2f} ({v.median('prepare_s'):.2f}) | "
            f"{v.median('wall_s'):.2f} | {cpu} |"
        )
    naive, sequential = by["naive"].median("rate"), by["sequential"].median("rate")
    jobs = ("csv", "parquet", "feature-store", "feature-store-scan", "feature-store-2")
    lines += ["", "Ratios (medians):", ""]
    for key in jobs:
        rate = by[key].median("rate")
        lines.append(
            f"- {by[key].label}: **{rate / naive:.1f}x** the naive baseline, "
            f"{rate / sequential:.1f}x the sequential one"
        )
    target = 20_000
    lines += [
        "",
        f"Target >= {target:,} entities/s end to end: "
        + ", ".join(
            f"{by[k].label} {'met' if by[k].median('rate') >= target else 'NOT met'}" for k in jobs
        )
        + ".",
        "",
        "Raw results (JSON):",
        "",
        "```json",
        json.dumps({v.key: v.results for v in variants}, indent=None, default=float),
        "```",
    ]
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Batch scoring\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{section}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_score", description=__doc__)
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--naive-entities",
        type=int,
        default=50_000,
        help="entities for the naive baseline (its rate does not depend on the count, and "
        "200k take over a minute per repeat)",
    )
    parser.add_argument("--no-doc", action="store_true", help="print only, leave the doc alone")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gw-batch-bench-") as work:
        bench = Bench(args, Path(work))
        try:
            bench.prepare()
            variants = [
                Variant("csv", "job, CSV file", lambda: bench.job(str(bench.csv))),
                Variant("parquet", "job, Parquet file", lambda: bench.job(str(bench.parquet))),
                Variant("feature-store", "job, feature store (id index)",
                        lambda: bench.job("feature-store", snapshot="index")),
                Variant("feature-store-scan", "job, feature store without the index (SCAN)",
                        bench.without_index),
                Variant("feature-store-2", "job, feature store (id index), 2 shards in parallel",
                        lambda: bench.job("feature-store", shards=2, snapshot="index")),
                Variant("naive", "baseline: naive (64 rows/call, 1 SET per entity)",
                        lambda: bench.baseline("naive")),
                Variant("sequential", "baseline: sequential (256 rows/call, pipelined SETs)",
                        lambda: bench.baseline("sequential")),
            ]  # fmt: skip
            for repeat in range(1, args.repeats + 1):
                for variant in variants:
                    result = variant.run()
                    variant.results.append(result)
                    print(
                        f"[{repeat}/{args.repeats}] {variant.label}: {result['rate']:,.0f} "
                        f"entities/s (job {result['elapsed_s']:.2f}s, process "
                        f"{result['wall_s']:.2f}s)",
                        flush=True,
                    )
            section = report(bench, variants)
        finally:
            bench.close()
    print(section)
    if not args.no_doc:
        write_doc(section)
        print(f"\nwritten to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
