"""``python -m benchmarks.queue_delay``: what Triton's dynamic-batching queue delay costs.

Triton's ``max_queue_delay_microseconds`` makes a request that reaches an idle model instance
wait that long for company. The gateway already batches its misses (and holds a batch while
its previous call is out), so a delay in Triton makes each of its calls wait a second time.
This measures both sides of that choice in one run.

Starts Redis with the demo features and, per ``--delays`` value, one Triton serving the
shipped model repository with that queue delay (queue policy removed and response cache off,
as in ``benchmarks.run``) and one gateway (``--workers``) in front of it. Alternating rounds
(the order of the delays reversed every other round), per delay: ``wrk`` at saturation on
direct Triton (unique inputs) and on the gateway's miss (``cache: bypass``), with the CPU of
the servers from ``/proc`` and Triton's own statistics around each run: queue time per
request, rows per model execution and requests (gateway calls) per execution. Prints the
medians and, per delay, the miss's req/s over direct Triton's in the same round.

Loopback only; every process it starts is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gpu_triton import model_stats
from benchmarks.run import (
    LUA_COMMON,
    LUA_TRITON,
    ROOT,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    run_wrk,
    set_queue_delay,
    without_queue_policy,
)
from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer


@dataclass(frozen=True)
class QueueFigures:
    queue_us_per_request: float
    rows_per_execution: float
    requests_per_execution: float
    """Requests Triton merged into one execution: for the gateway, its calls (each a batch)."""


def queue_figures(before: Mapping[str, float], after: Mapping[str, float]) -> QueueFigures:
    """Between two readings of :func:`benchmarks.gpu_triton.model_stats`."""
    requests, queue_ns, executions, rows = (
        after[k] - before[k] for k in ("success", "queue_ns", "executions", "inferences")
    )
    return QueueFigures(
        queue_us_per_request=queue_ns / max(requests, 1) / 1000,
        rows_per_execution=rows / max(executions, 1),
        requests_per_execution=requests / max(executions, 1),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue_delay", description=__doc__)
    parser.add_argument("--delays", default="0,500", help="queue delays to compare, µs")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per gateway")
    args = parser.parse_args(argv)
    delays = [int(d) for d in args.delays.split(",")]
    if shutil.which("wrk") is None:
        print("error: wrk not found on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 1

    redis = RedisServer()
    tritons: dict[int, TritonServer] = {}
    gateways: dict[int, GatewayProcess] = {}
    scratch = Path(tempfile.mkdtemp(prefix="gw-queue-delay-"))
    try:
        redis.start()
        asyncio.run(load_demo(redis.url))
        for delay in delays:
            # Queue policy removed, as benchmarks.run serves the model.
            repository = without_queue_policy(ROOT / "model_repository", scratch / str(delay))
            set_queue_delay(repository, delay)
            triton = tritons[delay] = TritonServer(repository, cache_size_bytes=0)
            triton.start()
            gateways[delay] = GatewayProcess(
                spec_path=SPEC, redis_url=redis.url, triton_url=triton.grpc_url,
                workers=args.workers,
            ).start()  # fmt: skip
        direct_lua = scratch / "direct.lua"
        direct_lua.write_text(LUA_COMMON + LUA_TRITON)
        miss_lua = {delay: scratch / f"miss-{delay}.lua" for delay in delays}
        for delay, script in miss_lua.items():
            key = gateways[delay].api_key
            script.write_text(LUA_COMMON + gateway_lua(10_000, ',"cache":"bypass"', key))
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for n in range(args.rounds):
            order = delays if n % 2 == 0 else delays[::-1]
            for path in ("direct", "miss"):
                for delay in order:
                    triton, gateway = tritons[delay], gateways[delay]
                    if path == "direct":
                        url, lua = triton.http_url, direct_lua
                        pids = [triton.pid or 0]
                    else:
                        url, lua = gateway.url, miss_lua[delay]
                        pids = [gateway.pid or 0, triton.pid or 0]
                    run_wrk(url, lua, args.connections, 1, 2)
                    before, cpu0 = model_stats(triton.http_url), cpu_seconds(pids)
                    sat = run_wrk(url, lua, args.connections, args.duration, 2)
                    cpu1, after = cpu_seconds(pids), model_stats(triton.http_url)
                    queue = queue_figures(before, after)
                    figures = {
                        "rps": sat["rps"],
                        "cpu_ms": (cpu1 - cpu0) / max(sat["requests"], 1) * 1000,
                        "queue_us": queue.queue_us_per_request,
                        "rows_per_exec": queue.rows_per_execution,
                        "requests_per_exec": queue.requests_per_execution,
                    }
                    results.setdefault((path, delay), []).append(figures)
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
                    print(f"round {n + 1} {path} delay {delay} µs: {shown}", flush=True)
        print(report(results, delays, args))
        return 0
    finally:
        for gateway in gateways.values():
            gateway.stop()
        for triton in tritons.values():
            triton.stop()
        redis.close()
        shutil.rmtree(scratch, ignore_errors=True)


def report(
    results: Mapping[tuple[str, int], list[dict[str, float]]],
    delays: list[int],
    args: argparse.Namespace,
) -> str:
    lines = [
        f"Medians of {args.rounds} alternating rounds, `wrk -t2 -c{args.connections} "
        f"-d{args.duration:g}s`, {args.workers} gateway workers. CPU: Triton for direct, the "
        "gateway and Triton for the miss.",
        "",
        "| path | queue delay µs | req/s | CPU ms/req | Triton queue µs/request | rows per "
        "execution | requests per execution |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in ("direct", "miss"):
        for delay in delays:
            rounds = results[(path, delay)]
            med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            lines.append(
                f"| {path} | {delay} | {med['rps']:,.0f} | {med['cpu_ms']:.3f} | "
                f"{med['queue_us']:.0f} | {med['rows_per_exec']:.1f} | "
                f"{med['requests_per_exec']:.1f} |"
            )
    lines += ["", "Miss req/s over direct Triton's, same delay, round by round:", ""]
    for delay in delays:
        ratios = [
            m["rps"] / d["rps"]
            for d, m in zip(results[("direct", delay)], results[("miss", delay)], strict=True)
        ]
        lines.append(
            f"- delay {delay} µs: median {statistics.median(ratios):.2f} "
            f"({', '.join(f'{r:.2f}' for r in ratios)})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
