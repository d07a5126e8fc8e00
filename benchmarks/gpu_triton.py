"""``python -m benchmarks.gpu_triton``: the fraud model in Triton on a GPU instance and on a CPU
instance of the same machine, under the same wrk load, side by side.

Each instance kind gets its own ``tritonserver`` from the nvidia-pytriton wheel
(``TritonServer(gpu=...)``: the production config's KIND_GPU instance kept, or moved to the CPU),
response cache off and no queue policy, as direct Triton in ``benchmarks.run``. Per kind it

* checks the served scores against onnxruntime on the CPU (256 random rows, max abs error);
* drives ``POST /v2/models/fraud_scorer/infer`` with wrk, unique inputs, for each requested
  (rows per request, connections): req/s, rows/s, p50/p99, Triton's CPU per request from /proc;
* reads Triton's statistics around each run: rows per model execution (what dynamic batching
  formed), compute time per execution and queue time per request;
* samples ``nvidia-smi`` during each run where there is one: GPU utilisation and memory.

Needs a machine with an NVIDIA GPU for the GPU rows (``--kinds cpu`` runs the rest anywhere).
Loopback only; every process it starts is stopped in ``finally``. Results: docs/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from benchmarks.run import LUA_COMMON, LUA_TRITON, ROOT, cpu_seconds, run_wrk, without_queue_policy
from triton_launcher.launcher import TritonServer

MODEL = "fraud_scorer"
ONNX = ROOT / "model_repository" / MODEL / "1" / "model.onnx"

LUA_ROWS = """
local rows_per_request = ROWS
request = function()
  counter = counter + 1
  local rows = {}
  for i = 1, rows_per_request do
    local amount = 1 + ((counter * rows_per_request + i) % 1000000) * 0.013
    rows[i] = string.format('%.3f,14,0.2,3.0,1.5,1,0,0,1,4,55.0,900,0,0', amount)
  end
  local body = '{"inputs":[{"name":"features","shape":[' .. rows_per_request .. ',14],'
    .. '"datatype":"FP32","data":[' .. table.concat(rows, ',') .. ']}]}'
  return wrk.format("POST", "/v2/models/fraud_scorer/infer",
    {["Content-Type"] = "application/json"}, body)
end
"""


def _lua(rows: int) -> str:
    return LUA_COMMON + (LUA_TRITON if rows == 1 else LUA_ROWS.replace("ROWS", str(rows)))


def _json(response: httpx.Response) -> Any:
    """The body, or an error that quotes Triton's message (raise_for_status drops it)."""
    if response.is_error:
        raise RuntimeError(f"{response.url}: HTTP {response.status_code}: {response.text}")
    return response.json()


def model_stats(http_url: str) -> dict[str, float]:
    """Triton's cumulative counters for the model (all versions)."""
    stats = _json(httpx.get(f"{http_url}/v2/models/{MODEL}/stats", timeout=10))["model_stats"]
    total: dict[str, float] = {}
    for version in stats:
        inference = version["inference_stats"]
        for key, value in (
            ("inferences", version["inference_count"]),
            ("executions", version["execution_count"]),
            ("success", inference["success"]["count"]),
            ("queue_ns", inference["queue"]["ns"]),
            # Per execution: inference_stats' compute_infer adds a batch's time once for each
            # request in it, batch_stats once per execution.
            ("compute_ns", sum(int(b["compute_infer"]["ns"]) for b in version["batch_stats"])),
        ):
            total[key] = total.get(key, 0.0) + float(value)
    return total


def max_error(http_url: str) -> float:
    """Largest |Triton score - onnxruntime CPU score| over 256 random rows."""
    rng = np.random.default_rng(11)
    rows = (rng.random((256, 14)) * 50).astype(np.float32)
    rows[:, 0] = rng.lognormal(4, 2, size=256).astype(np.float32)
    body = {
        "inputs": [
            {
                "name": "features",
                "shape": [256, 14],
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    answer = _json(httpx.post(f"{http_url}/v2/models/{MODEL}/infer", json=body, timeout=30))
    served = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(256, 1)
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"features": rows})
    return float(np.max(np.abs(served - expected)))


class GpuSampler:
    """``nvidia-smi`` every 200 ms while a run lasts (nothing where there is no nvidia-smi)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used"]
        while not self._stop.wait(0.2):
            out = subprocess.run(
                [*query, "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            try:
                util, memory = (float(v) for v in out.split(","))
            except ValueError:
                continue
            self.samples.append((util, memory))

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        util = statistics.mean(u for u, _ in self.samples)
        memory = max(m for _, m in self.samples)
        return f"{util:.0f}% / {memory:.0f} MiB"


def measure_kind(kind: str, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    repository = without_queue_policy(ROOT / "model_repository", work / kind)
    extra = list(args.triton_arg)
    server = TritonServer(repository, gpu=kind == "gpu", startup_timeout_s=300, extra_args=extra)
    rows_out: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        server.start()
        startup_s = time.monotonic() - t0
        log = server.log_path.read_text(errors="replace")
        said = [line.split("runs on ", 1)[1] for line in log.splitlines() if "runs on " in line]
        runs_on = said[0].strip().rstrip("\"'") if said else "(not logged)"
        error = max_error(server.http_url)
        if not error <= args.tolerance:
            raise RuntimeError(f"[{kind}] scores differ from onnxruntime CPU by {error:.2e}")
        print(f"[{kind}] ready in {startup_s:.1f} s, runs on {runs_on}, max |error| {error:.2e}")
        if args.check_only:
            return rows_out
        pid = server.pid
        assert pid is not None
        for rows in args.rows:
            script = work / f"{kind}-{rows}.lua"
            script.write_text(_lua(rows))
            for connections in args.connections:
                run_wrk(server.http_url, script, connections, 2, args.threads)  # warm-up
                before, cpu0 = model_stats(server.http_url), cpu_seconds([pid])
                with GpuSampler() as gpu:
                    sat = run_wrk(server.http_url, script, connections, args.duration, args.threads)
                after, cpu1 = model_stats(server.http_url), cpu_seconds([pid])
                delta = {k: after[k] - before[k] for k in after}
                executions = max(delta["executions"], 1.0)
                requests = max(delta["success"], 1.0)
                row = {
                    "kind": kind,
                    "runs_on": runs_on,
                    "rows": rows,
                    "connections": connections,
                    "rps": sat["rps"],
                    "rows_per_s": sat["rps"] * rows,
                    "p50_ms": sat["p50_ms"],
                    "p99_ms": sat["p99_ms"],
                    "errors": sat["non2xx"] + sat["socket_errors"],
                    "triton_cpu_ms_per_req": 1000 * (cpu1 - cpu0) / requests,
                    "rows_per_execution": delta["inferences"] / executions,
                    "compute_us_per_execution": delta["compute_ns"] / executions / 1000,
                    "queue_us_per_request": delta["queue_ns"] / requests / 1000,
                    "gpu": gpu.summary(),
                    "startup_s": startup_s,
                    "max_error": error,
                }
                rows_out.append(row)
                print(json.dumps(row), flush=True)
    except BaseException:
        if args.out is not None and server.pid is not None:
            shutil.copyfile(server.log_path, args.out.parent / f"tritonserver-{kind}.log")
        raise
    finally:
        server.stop()
    return rows_out


def machine() -> list[str]:
    lines = [f"- CPU: {os.cpu_count()} cores, {platform.processor() or platform.machine()}"]
    if shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        lines.append(f"- GPU: {gpus.strip() or '(none listed)'}")
    lines.append(f"- onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    lines.append(f"- Python {platform.python_version()}")
    return lines


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        "# Triton on a GPU instance and on a CPU instance, same machine",
        "",
        *machine(),
        f"- wrk -t{args.threads}, {args.duration:.0f} s per run after 2 s of warm-up, unique "
        "inputs, JSON over HTTP; response cache off, no queue policy",
        "",
        "| instance | runs on | rows/request | connections | req/s | rows/s | p50 / p99 ms "
        "| errors | Triton CPU ms/req | rows per execution | compute µs/execution "
        "| queue µs/request | GPU util / memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        out.append(
            f"| {r['kind']} | {r['runs_on']} | {r['rows']} | {r['connections']} | "
            f"{r['rps']:,.0f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} | "
            f"{r['errors']:.0f} | {r['triton_cpu_ms_per_req']:.3f} | "
            f"{r['rows_per_execution']:.1f} | {r['compute_us_per_execution']:.0f} | "
            f"{r['queue_us_per_request']:.0f} | {r['gpu']} |"
        )
    kinds = {r["kind"]: r for r in results}
    out.append("")
    for kind, r in kinds.items():
        out.append(
            f"- {kind}: ready in {r['startup_s']:.1f} s (warm-up included), max |score - "
            f"onnxruntime CPU| over 256 rows {r['max_error']:.1e}"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_triton", description=__doc__)
    parser.add_argument("--kinds", default="gpu,cpu", help="instance kinds, in order")
    parser.add_argument("--rows", default="1,64", help="rows per request, comma-separated")
    parser.add_argument("--connections", default="32,128", help="wrk connections")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--threads", type=int, default=4, help="wrk threads")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--triton-arg", action="append", default=[], help="extra tritonserver flag (repeatable)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-5, help="largest score error accepted"
    )
    parser.add_argument(
        "--check-only", action="store_true", help="start and check the scores, no load"
    )
    args = parser.parse_args(argv)
    args.rows = [int(v) for v in args.rows.split(",")]
    args.connections = [int(v) for v in args.connections.split(",")]
    if shutil.which("wrk") is None:
        print("error: wrk not found on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-triton-") as tmp:
        for kind in args.kinds.split(","):
            results += measure_kind(kind, args, Path(tmp))
    text = report(results, args)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
