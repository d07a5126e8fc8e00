"""``python -m benchmarks.stream``: throughput and latency of the event-driven lane.

Starts its own redis-server and tritonserver (response cache off), loads the demo card
features, then for every combination of workers, batch size and max wait:

* saturation: a backlog of ``--events`` card transactions is appended before the workers
  start, with the consumer group already past it; once they are up and idle, the group is
  rewound (XGROUP SETID 0) and one more append wakes them, so every worker starts on the backlog
  at the same moment. events/s = entries / (last publication - rewind), median of ``--repeat``
  drains of the same backlog (a rewind redelivers it: the same work again). Worker CPU per
  event comes from ``/proc`` over the same interval;
* fixed rates: each of ``--rates`` events/s for ``--rate-duration`` s, open loop (appends follow the
  schedule whatever the workers do); each published prediction carries its event-to-prediction
  latency, from the entry's append to the prediction's publication, both on the Redis clock
  (the start is the entry id's millisecond, so figures are high by up to 1 ms); p50 / p99 of
  those, and the mean batch size from the workers' metrics.

Every event carries three features (amount, hour, channel), so each one costs a feature write,
a feature read, a Triton row, a cache write and an output record: the full path.
Writes ``docs/stream-benchmark.md`` (and ``.json``). Loopback only; every process it starts is
stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import redis

from benchmarks.run import cpu_seconds, load_demo
from devstack.redis_server import RedisServer
from gateway.config import RedisSettings
from gateway.store import open_redis
from gateway.stream.produce import append_events, demo_events
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "config/models.yaml"
DEMO_CARDS = 10_000


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "{")
        )


@dataclass
class Fixed:
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_batch: float


@dataclass
class Result:
    workers: int
    batch_size: int
    wait_ms: float
    window: int
    events_per_s: float = 0.0
    cpu_ms_per_event: float = 0.0
    fixed: dict[float, Fixed] = field(default_factory=dict)
    """Latency at each fixed rate the configuration can sustain."""
    load_avg: float = 0.0
    """1-minute load average when the configuration finished: other work on the machine."""
    runs: list[float] = field(default_factory=list)
    """events/s of each repeat (the table shows the median)."""


def start_workers(
    n: int, redis_url: str, triton_url: str, lane: str, size: int, wait_ms: float, window: int
) -> list[Worker]:
    workers = []
    for i in range(n):
        port = free_port()
        log = Path(tempfile.mkstemp(prefix="gw-bench-stream-", suffix=".log")[1])
        env = {
            **os.environ,
            "GATEWAY_SPEC_PATH": str(SPEC),
            "GATEWAY_REDIS__URL": redis_url,
            "GATEWAY_TRITON__URL": triton_url,
            "GATEWAY_STREAM__STREAM": f"{lane}:events",
            "GATEWAY_STREAM__GROUP": "bench",
            "GATEWAY_STREAM__OUTPUT_STREAM": f"{lane}:out",
            "GATEWAY_STREAM__DEAD_LETTER_STREAM": f"{lane}:dead",
            "GATEWAY_STREAM__CONSUMER": f"w{i}",
            "GATEWAY_STREAM__BATCH_MAX_SIZE": str(size),
            "GATEWAY_STREAM__BATCH_MAX_WAIT_MS": str(wait_ms),
            "GATEWAY_STREAM__MAX_IN_FLIGHT": str(window),
            "GATEWAY_STREAM__OUTPUT_MAXLEN": "10000000",
            "GATEWAY_STREAM__LAG_INTERVAL_S": "60",
            "GATEWAY_STREAM__METRICS_PORT": str(port),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "stream-worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        workers.append(Worker(process, port, log))
    deadline = time.monotonic() + 60
    for worker in workers:
        while "ready" not in worker.log.read_text(errors="replace"):
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{worker.log.read_text()}")
            time.sleep(0.05)
    return workers


def stop_workers(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
        worker.log.unlink(missing_ok=True)


def drained(kv: redis.Redis, stream: str) -> bool:
    """Everything appended was delivered to the group and acknowledged."""
    info = kv.xinfo_stream(stream)
    for group in kv.xinfo_groups(stream):  # type: ignore[union-attr]
        if group["name"] == b"bench":
            return bool(
                group["pending"] == 0 and group["last-delivered-id"] == info["last-generated-id"]
            )
    return False


def wait_drained(kv: redis.Redis, stream: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not drained(kv, stream):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{stream} not drained after {timeout_s}s")
        time.sleep(0.01)


async def produce_burst(redis_url: str, stream: str, n: int, seed: int) -> None:
    async with open_redis(RedisSettings(url=redis_url, socket_timeout_s=5)) as client:
        events = list(demo_events("fraud_scorer", n, entities=DEMO_CARDS, seed=seed))
        for start in range(0, n, 2000):
            await append_events(client, stream, events[start : start + 2000], maxlen=10_000_000)


async def produce_at_rate(redis_url: str, stream: str, rate: float, duration_s: float) -> float:
    """Open loop: every 5 ms append what the schedule says is due. Returns the achieved rate."""
    async with open_redis(RedisSettings(url=redis_url, socket_timeout_s=5)) as client:
        source = demo_events("fraud_scorer", int(rate * duration_s) + 1, entities=DEMO_CARDS)
        sent = 0
        started = time.perf_counter()
        total = int(rate * duration_s)
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            if due > sent:
                batch = [next(source) for _ in range(due - sent)]
                await append_events(client, stream, batch, maxlen=10_000_000)
                sent = due
            await asyncio.sleep(0.005)
        return sent / (time.perf_counter() - started)


def saturation(
    args: argparse.Namespace,
    kv: redis.Redis,
    workers: list[Worker],
    stream: str,
    out: str,
) -> tuple[float, float]:
    """(events/s, worker CPU ms per event) draining the backlog once more (see the docstring)."""
    mark = kv.xrevrange(out, count=1)
    pids = [w.process.pid for w in workers]
    cpu0 = cpu_seconds(pids)
    t0 = time.time()
    kv.xgroup_setid(stream, "bench", "0")
    kv.xadd(stream, dict(next(demo_events("fraud_scorer", 1, entities=DEMO_CARDS))))
    wait_drained(kv, stream)
    cpu1 = cpu_seconds(pids)
    entries = kv.xlen(stream)
    last_ms = int(kv.xrevrange(out, count=1)[0][0].split(b"-")[0])
    published = len(kv.xrange(out, min=b"(" + mark[0][0])) if mark else kv.xlen(out)
    assert published == entries, (published, entries)
    return entries / (last_ms / 1000 - t0), (cpu1 - cpu0) / entries * 1000


def fixed_rate(
    args: argparse.Namespace,
    redis_url: str,
    kv: redis.Redis,
    workers: list[Worker],
    stream: str,
    out: str,
    rate: float,
) -> Fixed:
    batches0 = sum(w.metric("gateway_stream_batch_size_count") for w in workers)
    rows0 = sum(w.metric("gateway_stream_batch_size_sum") for w in workers)
    mark = kv.xrevrange(out, count=1)[0][0]
    achieved = asyncio.run(produce_at_rate(redis_url, stream, rate, args.rate_duration))
    wait_drained(kv, stream)
    latencies = np.array([float(f[b"latency_ms"]) for _, f in kv.xrange(out, min=b"(" + mark)])
    p50, p99 = (float(x) for x in np.percentile(latencies, [50, 99]))
    batches = sum(w.metric("gateway_stream_batch_size_count") for w in workers) - batches0
    rows = sum(w.metric("gateway_stream_batch_size_sum") for w in workers) - rows0
    return Fixed(achieved, p50, p99, float(latencies.max()), rows / max(batches, 1))


def run_config(args: argparse.Namespace, redis_url: str, triton_url: str, r: Result) -> None:
    kv = redis.Redis.from_url(redis_url)
    lane = f"bench:{uuid.uuid4().hex[:6]}"
    stream, out = f"{lane}:events", f"{lane}:out"
    # The backlog, and the group already past it: the workers start idle.
    asyncio.run(produce_burst(redis_url, stream, args.events, seed=2))
    kv.xgroup_create(stream, "bench", id="$")
    workers = start_workers(
        r.workers, redis_url, triton_url, lane, r.batch_size, r.wait_ms, r.window
    )
    try:
        cpu_per_event = []
        for _ in range(args.repeat):
            rate, cpu_ms = saturation(args, kv, workers, stream, out)
            r.runs.append(rate)
            cpu_per_event.append(cpu_ms)
        r.events_per_s = float(np.median(r.runs))
        r.cpu_ms_per_event = float(np.median(cpu_per_event))

        # Fixed rate: open-loop appends; latency from each output record. Skipped when the
        # rate is beyond what the configuration drains: latency would only measure a backlog.
        for rate in args.rates:
            if r.events_per_s >= rate * 1.1:
                r.fixed[rate] = fixed_rate(args, redis_url, kv, workers, stream, out, rate)
        r.load_avg = float(Path("/proc/loadavg").read_text().split()[0])
    finally:
        stop_workers(workers)
        kv.delete(stream, out, f"{lane}:dead")
        kv.close()
    print(
        f"workers={r.workers} size={r.batch_size:5d} wait={r.wait_ms:5g}ms window={r.window:5d}: "
        f"{r.events_per_s:8,.0f} events/s  cpu {r.cpu_ms_per_event:.3f} ms/event  "
        + "".join(
            f"@{f.achieved_rate:,.0f}/s p50 {f.p50_ms:.2f} p99 {f.p99_ms:.2f} max {f.max_ms:.1f} "
            f"ms batch {f.mean_batch:.1f}  "
            for f in r.fixed.values()
        )
        + f"runs {[round(x) for x in r.runs]} load {r.load_avg}",
        flush=True,
    )


def write_report(results: list[Result], args: argparse.Namespace, out: Path) -> None:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rates = ", ".join(f"{r:g}" for r in args.rates)
    lines = [
        "# Stream lane benchmark",
        "",
        f"Produced by `python -m benchmarks.stream {' '.join(sys.argv[1:])}`.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "- Everything on this one machine: redis-server 7.0, Triton (CPU, python backend running "
        "the ONNX model, response cache off), the workers and the producer share the cores.",
        "- Each event carries 3 features of one of 10,000 demo cards: feature write (event-time "
        "ordered script), feature read, one Triton call per micro-batch, cache write, output "
        "record, acknowledgement.",
        f"- Saturation: a backlog of {args.events:,} events, drained by workers that all start "
        "on it at once (group rewound with XGROUP SETID); events/s = entries / (last "
        f"publication - rewind), median of {args.repeat} drains. Worker CPU from /proc.",
        f"- Fixed rates: {rates} events/s, {args.rate_duration:g} s each, open loop; latency "
        "= publication - append, both on the Redis clock, from each output record "
        "(`latency_ms`; the append side has millisecond resolution, so up to +1 ms). Cells: "
        "p50 / p99 ms (mean batch size).",
        "- Window (`max_in_flight`) = 4 x batch size: up to four batches in flight per worker.",
        "- A fixed rate is skipped where the configuration drains slower than 1.1 x that rate: "
        "its latency would only measure a growing backlog.",
        "- `load avg`: the machine's 1-minute load average after the configuration; above the "
        "core count, other work competed for the cores and the row is pessimistic.",
        "",
        "| workers | batch size | max wait ms | events/s (saturation) | worker CPU ms/event | "
        + " | ".join(f"@{r:g}/s: p50 / p99 ms (batch)" for r in args.rates)
        + " | load avg |",
        "|---:|---:|---:|---:|---:|" + "---:|" * len(args.rates) + "---:|",
    ]
    for r in results:
        cells = []
        for rate in args.rates:
            f = r.fixed.get(rate)
            cells.append(
                "beyond capacity"
                if f is None
                else f"{f.p50_ms:.1f} / {f.p99_ms:.1f} ({f.mean_batch:.0f})"
            )
        lines.append(
            f"| {r.workers} | {r.batch_size} | {r.wait_ms:g} | {r.events_per_s:,.0f} | "
            f"{r.cpu_ms_per_event:.3f} | " + " | ".join(cells) + f" | {r.load_avg:.1f} |"
        )
    lines += ["", f"Raw results (JSON): `{out.with_suffix('.json').name}`.", ""]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in results], indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__)
    parser.add_argument("--sizes", default="16,64,256,1024", help="batch_max_size values")
    parser.add_argument("--waits", default="2,5,20", help="batch_max_wait_ms values")
    parser.add_argument("--workers", default="1,2", help="worker counts")
    parser.add_argument("--events", type=int, default=30_000, help="saturation burst size")
    parser.add_argument(
        "--rates", default="500,2000", help="fixed rates, events/s (comma-separated)"
    )
    parser.add_argument("--rate-duration", type=float, default=5, help="seconds at fixed rate")
    parser.add_argument("--repeat", type=int, default=1, help="saturation runs (median)")
    parser.add_argument("--window", type=int, default=0, help="max_in_flight (0: 4 x size)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/stream-benchmark.md")
    args = parser.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",")]
    # Stop cleanly on SIGTERM too: the finally blocks stop the workers, Triton and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    redis_server = RedisServer()
    triton = TritonServer(ROOT / "model_repository", cache_size_bytes=0)
    results: list[Result] = []
    try:
        print("starting redis + triton ...", flush=True)
        redis_server.start()
        triton.start()
        print(f"loaded {asyncio.run(load_demo(redis_server.url))} demo cards", flush=True)
        for n in (int(x) for x in args.workers.split(",")):
            for size in (int(x) for x in args.sizes.split(",")):
                for wait in (float(x) for x in args.waits.split(",")):
                    window = args.window or 4 * size
                    result = Result(n, size, wait, window)
                    run_config(args, redis_server.url, triton.grpc_url, result)
                    results.append(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(results, args, args.out)
        print(args.out.read_text(), flush=True)
        return 0
    finally:
        print("stopping triton and redis ...", flush=True)
        triton.stop()
        redis_server.close()


if __name__ == "__main__":
    sys.exit(main())
