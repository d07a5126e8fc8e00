"""``python -m benchmarks.tracing_overhead``: what OpenTelemetry tracing costs the gateway.

The same gateway (1 uvicorn worker, auth off) runs in four tracing modes, side by side in one
run, against the same Redis, Triton (response cache off) and demo features:

* ``off``: no ``OTEL_*`` variables (the default): metrics only, tracing helpers return at once;
* ``0%``: tracing on, sampler ``always_off``: the fixed cost of a root span per request;
* ``5%``: ``parentbased_traceidratio`` 0.05, the chart's default when tracing is on;
* ``100%``: ``always_on``, every request traced and exported.

With tracing on, spans go over OTLP/HTTP (protobuf, batch processor) to a local sink that
only counts them (``devstack.otlp_sink``, in this process), so the export cost is the SDK's
real one. For each mode and path (miss: ``cache: bypass``, every request calls Triton; hit:
fresh cached predictions) wrk saturates the gateway and the gateway process's CPU is read from
``/proc`` before and after: req/s and CPU ms/request. Modes are interleaved over ``--rounds``
rounds so drift on a shared machine hits all of them alike, and each round starts one mode
later (off, 0%, 5%, 100%; then 0%, 5%, 100%, off; …) so no mode always holds the same place in
a round; use a multiple of four rounds. The report gives the median round and, for CPU, also
the best round (least disturbed by other load). Prints a Markdown table and writes JSON to
``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import (
    LUA_COMMON,
    ROOT,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    prewarm,
    run_wrk,
)
from devstack.gateway_process import GatewayProcess
from devstack.otlp_sink import OtlpSink
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer

MODES: dict[str, dict[str, str]] = {
    "off": {},
    "0%": {"OTEL_TRACES_SAMPLER": "always_off"},
    "5%": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.05"},
    "100%": {"OTEL_TRACES_SAMPLER": "always_on"},
}
PATHS = ("miss", "hit")


def measure(url: str, pid: int, script: Path, args: argparse.Namespace) -> dict[str, float]:
    run_wrk(url, script, args.connections, 2, args.threads)  # warm-up
    time.sleep(0.3)
    cpu0 = cpu_seconds([pid])
    result = run_wrk(url, script, args.connections, args.duration, args.threads)
    cpu1 = cpu_seconds([pid])
    requests = max(result["requests"], 1)
    return {
        "rps": result["rps"],
        "cpu_ms": (cpu1 - cpu0) / requests * 1000,
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["non2xx"] + result["socket_errors"],
    }


Runs = dict[str, dict[str, list[dict[str, float]]]]


def summarize(results: Runs) -> dict[str, dict[str, dict[str, float]]]:
    """Per mode and path: medians, best rounds, and CPU vs off paired by round.

    ``paired_cpu_vs_off`` is the median over rounds of (this mode's CPU/request / off's in the
    same round): a busy moment of the machine hits both modes of a round alike, so it is
    steadier than the ratio of the medians.
    """
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for mode, paths in results.items():
        summary[mode] = {}
        for path, runs in paths.items():
            off_runs = results["off"][path]
            summary[mode][path] = {
                **{
                    key: statistics.median(r[key] for r in runs)
                    for key in ("rps", "cpu_ms", "p50_ms", "p99_ms", "errors")
                },
                "best_rps": max(r["rps"] for r in runs),
                "best_cpu_ms": min(r["cpu_ms"] for r in runs),
                "paired_cpu_vs_off": statistics.median(
                    r["cpu_ms"] / o["cpu_ms"] for r, o in zip(runs, off_runs, strict=True)
                ),
            }
    return summary


def print_report(summary: dict[str, dict[str, dict[str, float]]], header: str) -> None:
    print()
    print(header)
    print()
    print(
        "| path | tracing | req/s (median) | CPU ms/req (median) | CPU ms/req (best) | "
        "p50 / p99 ms | req/s vs off | CPU vs off (median / best) | CPU vs off (paired) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in PATHS:
        off = summary["off"][path]
        for mode in MODES:
            s = summary[mode][path]
            print(
                f"| {path} | {mode} | {s['rps']:,.0f} | {s['cpu_ms']:.3f} | "
                f"{s['best_cpu_ms']:.3f} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
                f"{s['rps'] / off['rps']:.2f} | {s['cpu_ms'] / off['cpu_ms']:.2f} / "
                f"{s['best_cpu_ms'] / off['best_cpu_ms']:.2f} | {s['paired_cpu_vs_off']:.2f} |"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_overhead")
    parser.add_argument("--duration", type=float, default=8, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=4, help="a multiple of 4")
    parser.add_argument("--hit-entities", type=int, default=2000)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench-results/tmp/tracing_overhead.json"
    )
    parser.add_argument(
        "--report", type=Path, help="print the tables of a saved run (its --out JSON) and exit"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        saved = json.loads(args.report.read_text())
        print_report(summarize(saved["runs"]), saved.get("header", str(args.report)))
        return 0
    if shutil.which("wrk") is None:
        print("error: wrk not found on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 1

    lua_dir = Path(tempfile.mkdtemp(prefix="gw-trace-bench-"))
    scripts = {
        "miss": lua_dir / "miss.lua",
        "hit": lua_dir / "hit.lua",
    }
    scripts["miss"].write_text(LUA_COMMON + gateway_lua(10_000, ',"cache":"bypass"'))
    scripts["hit"].write_text(LUA_COMMON + gateway_lua(args.hit_entities, ""))
    results: Runs = {mode: {path: [] for path in PATHS} for mode in MODES}
    exported: dict[str, int] = {}
    with (
        RedisServer() as redis,
        TritonServer(ROOT / "model_repository", cache_size_bytes=0) as triton,
        OtlpSink(decode=False) as sink,
    ):
        print(f"loaded {asyncio.run(load_demo(redis.url))} demo entities", flush=True)
        names = list(MODES)
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for mode in names[shift:] + names[:shift]:
                otel = MODES[mode]
                env = {"OTEL_SERVICE_NAME": "gateway-bench", **otel}
                if mode != "off":
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
                requests_before = sink.requests
                with GatewayProcess(
                    spec_path=SPEC,
                    redis_url=redis.url,
                    triton_url=triton.grpc_url,
                    workers=1,
                    auth=False,
                    env=env,
                ) as gateway:
                    assert gateway.pid is not None
                    prewarm(gateway.url, args.hit_entities)
                    for path in PATHS:
                        r = measure(gateway.url, gateway.pid, scripts[path], args)
                        results[mode][path].append(r)
                        print(f"[round {round_no + 1}] {mode:>4} {path}: {r}", flush=True)
                # Stopping flushed the batch processor: everything exported has arrived.
                exported[mode] = exported.get(mode, 0) + sink.requests - requests_before
    shutil.rmtree(lua_dir, ignore_errors=True)

    summary = summarize(results)
    header = (
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, 1 gateway worker, "
        f"median of {args.rounds} interleaved rounds; OTLP export requests: {exported}"
    )
    print_report(summary, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"header": header, "summary": summary, "runs": results, "exported": exported},
            indent=1,
        )
    )
    print(f"\nraw results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
