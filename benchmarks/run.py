"""``python -m benchmarks.run``: direct Triton vs gateway (miss / hit) vs a reference gateway.

Starts Redis, two Tritons (response cache OFF: one serving the shipped model config to the
gateways, one for direct calls with the queue delay a single-row client would set,
``--direct-queue-delay-us``) and loads the demo features, then the gateway and
``benchmarks/reference_gateway.py`` with the same number of uvicorn workers (``--workers``,
default one per core, as the Helm chart deploys the gateway). ``--rounds`` times (default 3),
and the report gives the median of each figure. For each target and round:

* throughput at saturation: ``wrk -t2 -c<connections>`` with a generated Lua script that
  varies the entity id (gateway) or the ``amount`` input (direct Triton, so no two requests
  carry the same tensor) per request, in ``--slices`` slices of ``<duration>/<slices>``
  seconds, the targets interleaved slice by slice (the machine's speed drifts within seconds,
  and the ratios are meant to compare the targets, not two moments);
* server CPU per request: utime+stime of the server processes and all their descendants from
  ``/proc/<pid>/stat`` around each slice, divided by the requests completed;
* p50/p99 at a fixed moderate rate: ``benchmarks/openloop.py`` in its own process (wrk2 is not
  installed; wrk has no rate limit), open loop, latency from the scheduled send time.

Writes ``docs/benchmark.md`` and ``docs/benchmark.png``. Loopback only; every process it
starts is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "config/models.yaml"
DEMO = ROOT / "data/demo/card_features.csv"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PREDICT = "/v1/models/fraud_scorer/predict"

LUA_COMMON = """
local counter = 0
init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  counter = math.random(0, 1000000)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "JSON {\\"requests\\": %d, \\"non2xx\\": %d, \\"socket_errors\\": %d, "
    .. "\\"p50_ms\\": %.3f, \\"p99_ms\\": %.3f}\\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
  -- Every distinct latency (µs) and its count, so that slices of one measurement merge into
  -- exact percentiles.
  local seen = {}
  for i = 1, #latency do
    local value, count = latency(i)
    seen[#seen + 1] = string.format("[%d,%d]", value, count)
  end
  io.write("HIST [" .. table.concat(seen, ",") .. "]\\n")
end
"""

LUA_TRITON = """
request = function()
  counter = counter + 1
  local amount = 1 + counter * 0.013
  local body = string.format('{"inputs":[{"name":"features","shape":[1,14],"datatype":"FP32",'
    .. '"data":[%.3f,14,0.2,3.0,1.5,1,0,0,1,4,55.0,900,0,0]}]}', amount)
  return wrk.format("POST", "/v2/models/fraud_scorer/infer",
    {["Content-Type"] = "application/json"}, body)
end
"""

LUA_GATEWAY = """
request = function()
  counter = counter + 1
  local body = string.format('{"entity_id":"card-%06d"%s}', counter % N_ENTITIES + 1, 'EXTRA')
  return wrk.format("POST", "PATH", {["Content-Type"] = "application/json"AUTH}, body)
end
"""


def gateway_lua(n_entities: int, extra: str, api_key: str | None = None) -> str:
    lua = LUA_GATEWAY.replace("N_ENTITIES", str(n_entities)).replace("PATH", PREDICT)
    auth = f', ["Authorization"] = "Bearer {api_key}"' if api_key else ""
    return lua.replace("EXTRA", extra).replace("AUTH", auth)


# --- /proc CPU accounting ---------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine, all cores (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of each process and all of its live descendants (plus reaped children)."""
    total = 0
    for root in pids:
        for pid in _descendants(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # after ")": state=0, ..., utime=11, stime=12, cutime=13, cstime=14
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


# --- measurement --------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    url: str
    lua: str
    openloop_kind: str
    server_pids: list[int]  # the service itself (gateway / reference / Triton)
    stack_pids: list[int]  # everything that serves the request (adds Redis, Triton)
    result: dict[str, float] = field(default_factory=dict)
    """Per figure, the median over rounds (errors: the sum)."""
    rounds: list[dict[str, float]] = field(default_factory=list)
    # The gateway runs with auth on (its default): requests carry this key. The reference: None.
    api_key: str | None = None


def run_wrk(
    url: str,
    script: Path,
    connections: int,
    duration: float,
    threads: int,
    *,
    histogram: bool = False,
) -> dict[str, Any]:
    """wrk's summary (its script's ``done``); with ``histogram``, also its latencies as
    (µs, count) pairs under ``"histogram"``."""
    cmd = [
        shutil.which("wrk") or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    result["rps"] = float(rps.group(1)) if rps else result["requests"] / duration
    if histogram:
        line = next((x for x in out.stdout.splitlines() if x.startswith("HIST ")), "HIST []")
        result["histogram"] = json.loads(line[5:])
    return result


def percentile_ms(histogram: list[list[int]], p: float) -> float:
    """wrk's percentile (its stats.c) over (latency µs, count) pairs, so merged slices give
    what one run of wrk would have printed: the smallest latency whose cumulative count
    reaches ``round(p / 100 * n + 0.5)``."""
    n = sum(count for _, count in histogram)
    if n == 0:
        return 0.0
    rank = math.floor(p / 100 * n + 0.5 + 0.5)  # C's round(), half away from zero
    total = 0
    ordered = sorted(histogram)
    for value, count in ordered:
        total += count
        if total >= rank:
            return value / 1000
    return ordered[-1][0] / 1000  # p = 100: the rank is past the last request


def run_openloop(
    url: str, kind: str, rate: float, duration: float, api_key: str | None = None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.openloop", url, kind]
    cmd += ["--rate", str(rate), "--duration", str(duration)]
    if api_key:
        cmd += ["--api-key", api_key]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 60, check=True, cwd=ROOT
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


WARM_UP_S = 1
"""Each slice's warm-up: its target sat idle while the others ran."""


def saturate(t: Target, args: argparse.Namespace, script: Path, seconds: int) -> dict[str, Any]:
    """One slice of ``t``'s saturation measurement, after a warm-up: what wrk counted and the
    CPU and wall seconds it took."""
    run_wrk(t.url, script, args.connections, WARM_UP_S, args.threads)
    time.sleep(0.5)
    server0, stack0 = cpu_seconds(t.server_pids), cpu_seconds(t.stack_pids)
    busy0, wrk0, wall0 = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    sat = run_wrk(t.url, script, args.connections, seconds, args.threads, histogram=True)
    busy1, wrk1, wall1 = machine_busy_seconds(), children_cpu_seconds(), time.monotonic()
    server1, stack1 = cpu_seconds(t.server_pids), cpu_seconds(t.stack_pids)
    print(
        f"[{t.key}] {seconds} s slice: {sat['rps']:,.0f} req/s, p50 {sat['p50_ms']:.2f} ms, "
        f"p99 {sat['p99_ms']:.2f} ms, errors {sat['non2xx'] + sat['socket_errors']}",
        flush=True,
    )
    return {
        "requests": sat["requests"],
        # wrk's own run time (its req/s divides by it), not the process's
        "runtime_s": sat["requests"] / sat["rps"] if sat["rps"] else float(seconds),
        "errors": sat["non2xx"] + sat["socket_errors"],
        "histogram": sat["histogram"],
        "server_s": server1 - server0,
        "stack_s": stack1 - stack0,
        "wrk_s": wrk1 - wrk0,
        "busy_s": busy1 - busy0,
        "wall_s": wall1 - wall0,
    }


def round_figures(slices: list[dict[str, Any]], fixed: dict[str, Any]) -> dict[str, float]:
    """A target's figures for one round: its saturation slices summed (percentiles from their
    merged latencies), and its fixed-rate run."""
    requests = sum(x["requests"] for x in slices)
    n = max(requests, 1)
    latencies = [pair for x in slices for pair in x["histogram"]]
    server, stack = sum(x["server_s"] for x in slices), sum(x["stack_s"] for x in slices)
    wrk, busy = sum(x["wrk_s"] for x in slices), sum(x["busy_s"] for x in slices)
    return {
        "rps": requests / sum(x["runtime_s"] for x in slices),
        "sat_requests": requests,
        "sat_errors": sum(x["errors"] for x in slices),
        "sat_p50_ms": percentile_ms(latencies, 50),
        "sat_p99_ms": percentile_ms(latencies, 99),
        "cpu_ms_server": server / n * 1000,
        "cpu_ms_stack": stack / n * 1000,
        "wrk_cpu_s": wrk,
        # machine-wide busy CPU not accounted to the stack or wrk: other tenants, kernel
        "other_cpu_s": busy - stack - wrk,
        # under the core count: the target left cores idle (latency-bound, not CPU-bound)
        "cores_busy": busy / sum(x["wall_s"] for x in slices),
        "fixed_rate": fixed["achieved_rate"],
        "fixed_p50_ms": fixed["p50_ms"],
        "fixed_p99_ms": fixed["p99_ms"],
        "fixed_errors": fixed["errors"],
    }


def measure_round(targets: list[Target], args: argparse.Namespace, lua_dir: Path) -> None:
    """One round: every target's saturation slices interleaved (a b c d a b c d ...), then
    each target's fixed-rate run.

    This box's speed drifts within seconds: over twelve back-to-back 8 s runs every process's
    CPU per request varied up to 2x, by a third or more between some consecutive runs
    (docs/measurements.md). A target measured in one block was paired only loosely with one
    measured 20 s later; interleaved slices spread the same drift over all of them."""
    scripts = {t.key: lua_dir / f"{t.key}.lua" for t in targets}
    for t in targets:
        scripts[t.key].write_text(LUA_COMMON + t.lua)
    seconds = slice_seconds(args)
    slices: dict[str, list[dict[str, Any]]] = {t.key: [] for t in targets}
    for _ in range(args.slices):
        for t in targets:
            slices[t.key].append(saturate(t, args, scripts[t.key], seconds))
    for t in targets:
        time.sleep(0.5)
        fixed = run_openloop(t.url, t.openloop_kind, args.rate, args.duration, t.api_key)
        print(f"[{t.key}] fixed {args.rate:g} req/s: {fixed}", flush=True)
        t.rounds.append(round_figures(slices[t.key], fixed))
        t.result = {
            name: (sum if name.endswith("errors") else statistics.median)(r[name] for r in t.rounds)
            for name in t.rounds[0]
        }


def slice_seconds(args: argparse.Namespace) -> int:
    """Seconds per saturation slice: wrk takes whole seconds only."""
    seconds = args.duration / args.slices
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(
            f"--duration {args.duration:g} does not split into {args.slices} slices of whole "
            "seconds"
        )
    return int(seconds)


def prewarm(url: str, n: int, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=url, timeout=10, headers=headers) as client:
        for i in range(1, n + 1):
            r = client.post(PREDICT, json={"entity_id": f"card-{i:06d}"})
            r.raise_for_status()
        sources = {client.post(PREDICT, json={"entity_id": "card-000001"}).json()["source"]}
    assert sources == {"cache"}, sources


def start_reference(
    redis_url: str, triton_grpc: str, workers: int = 1
) -> tuple[subprocess.Popen[bytes], str]:
    env = {"REF_REDIS_URL": redis_url, "REF_TRITON_URL": triton_grpc}
    return start_uvicorn(["benchmarks.reference_gateway:app", "--workers", str(workers)], env)


def start_uvicorn(target: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m uvicorn <target...>`` on a free port; returns once /readyz answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", *target]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target[0]} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"{target[0]} not ready")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load_demo(redis_url: str) -> int:
    from gateway.config import RedisSettings
    from gateway.ingest import load_features
    from gateway.spec import load_specs
    from gateway.store import RedisStore, open_redis

    spec = load_specs(SPEC)["fraud_scorer"]
    async with open_redis(RedisSettings(url=redis_url)) as client:
        report = await load_features(RedisStore(client), spec, DEMO)
    return report.entities


# --- report -------------------------------------------------------------------------------


QUEUE_POLICY = re.compile(
    r"\n\s*#[^\n]*\n(?:\s*#[^\n]*\n)*\s*default_queue_policy \{[^}]*\}|"
    r"default_queue_policy \{[^}]*\}"
)


def without_queue_policy(repository: Path, into: Path) -> Path:
    """A copy of the model repository whose configs have no ``default_queue_policy``.

    With any queue policy, the CPU build of Triton 2.51 used here (python backend) held some
    requests for ~500 ms and served 4-6x fewer requests per second (measured: direct Triton
    1.0-1.7k req/s, p99 ~505 ms, against 5.3-6.2k req/s, p99 12-15 ms without it). The
    baseline would be Triton's worst case, so by default every target runs without it.
    """
    copy = into / "model_repository"
    shutil.copytree(repository, copy)
    for config in copy.glob("*/config.pbtxt"):
        config.write_text(QUEUE_POLICY.sub("", config.read_text()))
    return copy


_QUEUE_DELAY = re.compile(r"max_queue_delay_microseconds:\s*(\d+)")


def queue_delay_us(repository: Path, model: str = "fraud_scorer") -> int:
    """The dynamic batcher's queue delay in ``model``'s config (0 when it sets none)."""
    found = _QUEUE_DELAY.search((repository / model / "config.pbtxt").read_text())
    return int(found.group(1)) if found else 0


def set_queue_delay(repository: Path, delay_us: int) -> None:
    """Make every config of ``repository`` (a copy: it is rewritten in place) batch with
    ``delay_us`` of queue delay."""
    for config in repository.glob("*/config.pbtxt"):
        text = config.read_text()
        if not _QUEUE_DELAY.search(text):
            raise ValueError(f"{config}: no max_queue_delay_microseconds to set")
        config.write_text(_QUEUE_DELAY.sub(f"max_queue_delay_microseconds: {delay_us}", text))


def _workers(n: int) -> str:
    return f"{n} uvicorn worker{'s' if n != 1 else ''}"


def code_version(root: Path = ROOT) -> str:
    """The commit measured, and whether the tree differed from it (a report says what it ran)."""
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    dirty = " plus uncommitted changes" if status.stdout.strip() else ""
    return f"`{head.stdout.strip()}`{dirty}"


def machine_header(args: argparse.Namespace, triton_cache: int) -> list[str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return [
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}; code: {code_version()}",
        f"- Machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.platform()}, "
        f"Python {platform.python_version()}",
        "- Everything on 127.0.0.1 on this one machine: Redis, Triton (CPU, python backend "
        f"running the ONNX model), gateway ({_workers(args.workers)}), reference gateway "
        f"({_workers(args.workers)}), and the load generators share the same cores.",
        f"- Triton response cache: **OFF** (`cache_size_bytes={triton_cache}`, no "
        "`response_cache` block in the model config); direct-Triton inputs are unique per "
        "request anyway (the `amount` column changes every request).",
        "- Triton queue policy: "
        + (
            "as shipped (`default_queue_policy` in config.pbtxt)."
            if args.keep_queue_policy
            else "**removed** for this run (`--keep-queue-policy` keeps it): on this CPU build "
            "of Triton 2.51 any `default_queue_policy` held some requests ~500 ms and cut "
            "direct-Triton throughput 4-6x (1.0-1.7k vs 5.3-6.2k req/s, p99 ~505 vs 12-15 ms, "
            "measured 2026-11-23), which would make the baseline Triton's worst case. The "
            "gateway's deadlines do not depend on it; not measured on GPU builds."
        ),
        f"- Triton queue delay: the gateway's Triton serves the shipped config "
        f"(`max_queue_delay_microseconds: {queue_delay_us(ROOT / 'model_repository')}`: the "
        "gateway batches its misses itself). (a) runs on a Triton of its own, the same model "
        f"with {args.direct_queue_delay_us} µs (`--direct-queue-delay-us`), as a client "
        "sending single rows would configure it: on this box direct Triton's req/s at "
        "saturation, which the ratios divide by, was about the same with 500 µs as with 0 or "
        "higher, and its latency at a moderate rate higher, which no target compares "
        "(`python -m benchmarks.queue_delay` measures both paths at both settings; "
        "docs/measurements.md).",
        f"- Saturation: `{wrk_version.split(chr(10))[0].strip()}` `-t{args.threads} "
        f"-c{args.connections}`, Lua scripts varying the entity id per request; per target and "
        f"round {args.slices} slices of `-d{slice_seconds(args)}s`, each after a "
        f"{WARM_UP_S} s warm-up, the targets interleaved slice by slice (a b c d a b c d ...) "
        "because this box's speed drifts within seconds; a round's figures sum its slices "
        "(p50/p99 from their merged latencies, as wrk computes them).",
        f"- Fixed rate: {args.rate:g} req/s for {args.duration:g} s, open loop "
        "(`benchmarks/openloop.py`, its own process, 64 keep-alive connections; latency from "
        "the *scheduled* send time, so queueing is counted). wrk2 is not installed, and wrk "
        "has no rate limit.",
        "- The gateway runs as deployed, API-key auth on (each request carries its key; "
        "docs/security.md measures what auth costs); the reference gateway has no auth.",
        "- CPU/request: utime+stime from `/proc/<pid>/stat` of the process tree (live "
        "descendants included, e.g. Triton's python-backend stub) around each saturation "
        "slice, divided by requests completed. *Service* = the measured server alone (Triton for "
        "(a), the gateway's uvicorn process for (b)/(c), the reference's for (d)); *stack* = "
        "service + Redis + Triton. `other CPU s` = machine-wide busy CPU during the saturation "
        "run minus the stack's and wrk's: near 0 means nothing else competed for the cores. "
        "`cores busy` = machine-wide busy CPU seconds of the saturation run over its wall "
        f"time, of {os.cpu_count()}: below that, the target left cores idle at "
        f"{args.connections} connections (its requests were waiting: for a batch window, "
        "Triton's queue, a reply), so its req/s is bound by latency as well as by CPU.",
        "- wrk (and, for the fixed-rate runs, the Python generator) run on the same cores, so "
        "saturation figures are those of servers sharing the machine with the load generator.",
    ]


def paired(num: Target, den: Target, figure: str) -> list[float]:
    """``figure`` of ``num`` over that of ``den``, round by round."""
    return [x[figure] / y[figure] for x, y in zip(num.rounds, den.rounds, strict=True)]


def verdict(per_round: list[float], ok: Callable[[float], bool]) -> str:
    """Whether a target is met: in every round, by the median only, or not."""
    if all(ok(v) for v in per_round):
        return "yes"
    return "not in every round" if ok(statistics.median(per_round)) else "no"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def write_report(targets: list[Target], args: argparse.Namespace, out_md: Path) -> None:
    keyed = {t.key: t for t in targets}
    lines = ["# Benchmark: direct Triton vs gateway vs reference gateway", ""]
    lines += [
        "Produced by `python -m benchmarks.run "
        f"--duration {args.duration:g} --connections {args.connections} --rate {args.rate:g} "
        f"--workers {args.workers} --rounds {args.rounds} --slices {args.slices}`. Every "
        f"figure is the median of {args.rounds} rounds (errors: the sum).",
        "",
    ]
    lines += [*machine_header(args, 0), ""]
    lines += [
        "| target | req/s (saturation) | sat. p50 / p99 ms | CPU ms/req service | "
        f"CPU ms/req stack | p50 ms @{args.rate:g}/s | p99 ms @{args.rate:g}/s | errors | "
        "other CPU s | cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in targets:
        r = t.result
        lines.append(
            f"| {t.label} | {r['rps']:,.0f} | {r['sat_p50_ms']:.2f} / {r['sat_p99_ms']:.2f} | "
            f"{r['cpu_ms_server']:.3f} | {r['cpu_ms_stack']:.3f} | {r['fixed_p50_ms']:.2f} | "
            f"{r['fixed_p99_ms']:.2f} | {int(r['sat_errors'] + r['fixed_errors'])} | "
            f"{r['other_cpu_s']:.1f} | {r['cores_busy']:.2f} |"
        )
    lines += [
        "",
        "Ratios of the medians, and the same ratio per round: a round interleaves the "
        "targets' saturation slices, so its ratios are paired against the machine's drift.",
        "",
        "| ratio | req/s | req/s per round | CPU ms/req (service) | CPU ms/req (stack) |",
        "|---|---:|---:|---:|---:|",
    ]
    for num, den in (("b", "a"), ("c", "a"), ("b", "d")):
        x, y = keyed[num].result, keyed[den].result
        lines.append(
            f"| ({num})/({den}) | {x['rps'] / y['rps']:.2f} | "
            f"{_spread(paired(keyed[num], keyed[den], 'rps'))} | "
            f"{x['cpu_ms_server'] / y['cpu_ms_server']:.2f} | "
            f"{x['cpu_ms_stack'] / y['cpu_ms_stack']:.2f} |"
        )
    b_rounds = keyed["b"].rounds
    checks = (
        ("gateway miss CPU/request (service) <= 0.25 ms", "{:.3f} ms",
         [r["cpu_ms_server"] for r in b_rounds], lambda v: v <= 0.25),
        ("(b)/(a) req/s >= 0.50", "{:.2f}", paired(keyed["b"], keyed["a"], "rps"),
         lambda v: v >= 0.5),
        ("(c)/(a) req/s >= 1.00", "{:.2f}", paired(keyed["c"], keyed["a"], "rps"),
         lambda v: v >= 1.0),
        (f"miss p99 <= 10 ms at {args.rate:g} req/s", "{:.2f} ms",
         [r["fixed_p99_ms"] for r in b_rounds], lambda v: v <= 10),
    )  # fmt: skip
    lines += [
        "",
        "Targets from issue #7 (met: *yes* only when every round meets it; *not in every round* "
        "when the median does and some round does not):",
        "",
        "| target | median | rounds | met |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| {name} | {fmt.format(statistics.median(values))} | "
        f"{', '.join(fmt.format(v) for v in values)} | {verdict(values, ok)} |"
        for name, fmt, values, ok in checks
    ]
    lines += [
        "",
        "![benchmark](benchmark.png)",
        "",
        "Raw results (JSON):",
        "",
        "```json",
        json.dumps({t.key: {"median": t.result, "rounds": t.rounds} for t in targets}, indent=1),
        "```",
        "",
    ]
    out_md.write_text("\n".join(lines))


def plot(targets: list[Target], args: argparse.Namespace, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [t.label.replace(" ", "\n", 1) for t in targets]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    panels = (
        ("req/s at saturation", [t.result["rps"] for t in targets], "{:,.0f}"),
        ("server CPU ms / request (stack)", [t.result["cpu_ms_stack"] for t in targets], "{:.3g}"),
        (f"p99 ms at {args.rate:g} req/s", [t.result["fixed_p99_ms"] for t in targets], "{:.3g}"),
    )
    colors = ["#777777", "#1f77b4", "#2ca02c", "#d62728"]
    for ax, (title, values, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(labels, values, color=colors[: len(values)])
        ax.bar_label(bars, fmt=fmt, fontsize=8)
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"wrk -c{args.connections}, 127.0.0.1, Triton response cache off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--duration",
        type=float,
        default=8,
        help="seconds of each target's saturation run per round (all its slices) and of its "
        "fixed-rate run",
    )
    parser.add_argument(
        "--slices",
        type=int,
        default=4,
        help="saturation slices per target and round, the targets interleaved slice by slice",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rate", type=float, default=500, help="fixed-rate req/s")
    parser.add_argument("--hit-entities", type=int, default=2000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="measurements per target; the report shows medians"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="uvicorn workers of the gateway and of the reference gateway (default: one per "
        "core, as deployed)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmark.md")
    parser.add_argument(
        "--keep-queue-policy",
        action="store_true",
        help="serve the model config as shipped, default_queue_policy included (see the report)",
    )
    parser.add_argument(
        "--direct-queue-delay-us",
        type=int,
        default=500,
        help="queue delay of the Triton that (a) calls directly (the gateway's Triton keeps the "
        "shipped config's)",
    )
    args = parser.parse_args(argv)
    try:
        slice_seconds(args)
    except ValueError as e:
        parser.error(str(e))
    if shutil.which("wrk") is None:
        print("error: wrk not found on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 1

    redis = RedisServer()
    scratch = Path(tempfile.mkdtemp(prefix="gw-repo-"))

    def served(name: str) -> Path:
        """A copy of the shipped repository, queue policy removed unless kept."""
        if not args.keep_queue_policy:
            return without_queue_policy(ROOT / "model_repository", scratch / name)
        copy = scratch / name / "model_repository"
        shutil.copytree(ROOT / "model_repository", copy)
        return copy

    triton = TritonServer(served("gateway"), cache_size_bytes=0)
    # Direct callers get a Triton of their own, batching as a single-row client would set it
    # up: the gateway's setting (no queue delay) would make the baseline no faster and at
    # times slower (docs/measurements.md), and so flatter the ratios.
    direct_repository = served("direct")
    set_queue_delay(direct_repository, args.direct_queue_delay_us)
    direct_triton = TritonServer(direct_repository, cache_size_bytes=0)
    gateway: GatewayProcess | None = None
    reference: subprocess.Popen[bytes] | None = None
    lua_dir = Path(tempfile.mkdtemp(prefix="gw-bench-lua-"))
    try:
        print("starting redis + triton ...", flush=True)
        redis.start()
        triton.start()
        direct_triton.start()
        print(f"loaded {asyncio.run(load_demo(redis.url))} demo entities", flush=True)
        gateway = GatewayProcess(
            spec_path=SPEC, redis_url=redis.url, triton_url=triton.grpc_url, workers=args.workers
        ).start()
        reference, ref_url = start_reference(redis.url, triton.grpc_url, args.workers)
        assert gateway._process is not None
        assert redis._process is not None
        triton_pid, redis_pid = triton.pid, redis._process.pid
        direct_pid = direct_triton.pid
        assert triton_pid is not None
        assert direct_pid is not None
        gw_pid, ref_pid = gateway._process.pid, reference.pid
        print(f"prewarming {args.hit_entities} entities in the prediction cache ...", flush=True)
        prewarm(gateway.url, args.hit_entities, gateway.headers)

        backend = [redis_pid, triton_pid]
        key = gateway.api_key
        targets = [
            Target("a", "(a) direct Triton", direct_triton.http_url, LUA_TRITON, "triton",
                   [direct_pid], [direct_pid]),
            Target("b", "(b) gateway miss", gateway.url,
                   gateway_lua(10_000, ',"cache":"bypass"', key), "bypass", [gw_pid],
                   [gw_pid, *backend], api_key=key),
            Target("c", "(c) gateway hit", gateway.url, gateway_lua(args.hit_entities, "", key),
                   "hit", [gw_pid], [gw_pid, *backend], api_key=key),
            Target("d", "(d) reference miss", ref_url, gateway_lua(10_000, ',"cache":"bypass"'),
                   "ref", [ref_pid], [ref_pid, *backend]),
        ]  # fmt: skip
        # Each round interleaves the targets, so drift on a shared machine hits each alike.
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", flush=True)
            measure_round(targets, args, lua_dir)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_report(targets, args, args.out)
        plot(targets, args, args.out.with_suffix(".png"))
        print(args.out.read_text(), flush=True)
        return 0
    finally:
        print("stopping reference gateway, gateway, triton, redis ...", flush=True)
        stop_process(reference)
        if gateway is not None:
            gateway.stop()
        triton.stop()
        direct_triton.stop()
        redis.close()
        shutil.rmtree(lua_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
