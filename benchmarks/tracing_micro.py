"""``python -m benchmarks.tracing_micro``: telemetry CPU per request, without I/O or network.

Complements ``benchmarks.tracing_overhead`` (real stack, wrk, noisy on a shared machine): a
FastAPI app with the gateway's telemetry middleware and a predict-like route that passes the
same span sites as the real miss path (validate, Redis lookup, Triton call, cache write-back;
no I/O behind them) is driven in-process through ASGI. Each mode runs in its own process
(tracing is configured per process from ``OTEL_*``), exporting over OTLP/HTTP to a local sink:

* ``none``: no telemetry at all: no middleware, the route calls the same functions without
  span sites or timers (what the framework itself costs);
* ``off`` … ``100%``: the modes of ``benchmarks.tracing_overhead`` (metrics always on).

The modes are interleaved over ``--rounds`` rounds (one process per mode and round) so drift
on a shared machine hits all of them alike. Reports CPU µs per request: the median over
rounds of each round's best of ``--repeats``, the best overall, and the difference to ``off``
(what tracing costs) and to ``none`` (what all telemetry costs). With tracing off, the span
sites' own checks are also timed directly (``timeit``), as they are too small to see here.

CPU time on a machine shared with other jobs varies by tens of percent from run to run.
``--instructions`` counts instructions instead (valgrind's callgrind; ~50x slower, so fewer
requests): each mode runs at two request counts, the difference divided by the difference in
requests cancels start-up, and trace ids are seeded, so the same requests are sampled in
every run. The counts are exact and repeatable, whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import timeit
from collections.abc import MutableMapping
from typing import Any

from benchmarks.tracing_overhead import MODES
from devstack.otlp_sink import OtlpSink


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


MODE_NAMES = ("none", *MODES)


def _validate() -> None:
    return None


def _one_mode(mode: str, requests: int, repeats: int) -> float:
    from fastapi import FastAPI, Response

    from gateway.telemetry import tracing
    from gateway.telemetry.calls import redis_call, triton_call
    from gateway.telemetry.http import install_telemetry

    app = FastAPI()

    if mode == "none":

        @app.post("/v1/models/{model}/predict")
        async def predict_bare(model: str) -> Response:
            _validate()
            return Response(b"{}", media_type="application/json")

    else:

        @app.post("/v1/models/{model}/predict")
        async def predict(model: str) -> Response:
            tracing.call("validate", _validate)
            with redis_call("lookup", model, 1):
                pass
            with triton_call(model, model, "1", 1):
                pass
            with redis_call("write_predictions", model, 1):
                pass
            return Response(b"{}", media_type="application/json")

        install_telemetry(app, ["fraud_scorer"], slow_request_s=10.0)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/fraud_scorer/predict",
        "raw_path": b"/v1/models/fraud_scorer/predict",
        "query_string": b"",
        "headers": [(b"host", b"gateway"), (b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "root_path": "",
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def drive(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    with tracing.session() as provider:
        asyncio.run(drive(requests // 5))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = _cpu_s()
            asyncio.run(drive(requests))
            if provider is not None:
                provider.force_flush()  # the export's CPU belongs to these requests
            best = min(best, (_cpu_s() - start) / requests * 1e6)
    return best


def off_sites_ns() -> float:
    """With tracing off: ns per request that the span sites' checks add to the same calls.

    The five sites of a miss (validate, Redis lookup, Triton call, write-back, the server
    span) against the bare work they wrap; the metrics they record are left out of both.
    """
    from gateway.telemetry import tracing

    assert not tracing.enabled

    def with_sites() -> None:
        tracing.call("validate", _validate)
        for _ in range(4):  # server span, lookup, Triton call, write-back
            if tracing.enabled and tracing.in_sampled_trace():
                raise AssertionError

    def bare() -> None:
        _validate()

    n = 200_000
    sites = min(timeit.repeat(with_sites, number=n, repeat=7))
    plain = min(timeit.repeat(bare, number=n, repeat=7))
    return (sites - plain) / n * 1e9


def _env(mode: str, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(MODES.get(mode, {}))
    if mode not in ("none", "off"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    return env


def _child(mode: str, requests: int, repeats: int, endpoint: str) -> float:
    cmd = [sys.executable, "-m", "benchmarks.tracing_micro", "--mode", mode]
    cmd += ["--requests", str(requests), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=_env(mode, endpoint), capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["us"])


def _instructions_per_request(mode: str, endpoint: str, small: int, large: int) -> float:
    """Instructions per request of ``mode`` (callgrind), start-up cancelled by differencing."""
    counts = []
    for requests in (small, large):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
        cmd += ["-m", "benchmarks.tracing_micro", "--mode", mode, "--requests", str(requests)]
        cmd += ["--repeats", "1", "--seed", "0"]
        env = {**_env(mode, endpoint), "PYTHONHASHSEED": "0"}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        match = re.search(r"Collected : (\d+)", out.stderr)
        assert match is not None, out.stderr[-2000:]
        counts.append(int(match[1]))
    driven = [n // 5 + n for n in (small, large)]  # warm-up + one repeat
    return (counts[1] - counts[0]) / (driven[1] - driven[0])


def _instructions(args: argparse.Namespace) -> int:
    if shutil.which("valgrind") is None:
        print("error: valgrind not found on PATH (apt-get install -y valgrind)", file=sys.stderr)
        return 1
    counts: dict[str, float] = {}
    with OtlpSink(decode=False) as sink:
        for mode in MODE_NAMES:
            small = max(args.requests // 6, 1)
            counts[mode] = _instructions_per_request(mode, sink.endpoint, small, args.requests)
            print(f"{mode:>4}: {counts[mode] / 1000:,.1f} k instructions/request", flush=True)
    print()
    print("| mode | k instructions/request | vs off | vs none |")
    print("|---|---:|---:|---:|")
    for mode, count in counts.items():
        print(
            f"| {mode} | {count / 1000:,.1f} | {(count - counts['off']) / 1000:+,.1f} | "
            f"{(count - counts['none']) / 1000:+,.1f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_micro")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request under callgrind instead of timing CPU "
        "(repeatable on a shared machine; use --requests 600 or so)",
    )
    parser.add_argument("--mode", choices=MODE_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode is not None:  # the child process of one mode
        if args.seed is not None:
            random.seed(args.seed)  # the SDK draws trace ids from random: same ones sampled
        print(json.dumps({"us": _one_mode(args.mode, args.requests, args.repeats)}))
        return 0
    if args.instructions:
        return _instructions(args)
    runs: dict[str, list[float]] = {mode: [] for mode in MODE_NAMES}
    with OtlpSink(decode=False) as sink:
        for round_no in range(args.rounds):
            for mode in MODE_NAMES:
                us = _child(mode, args.requests, args.repeats, sink.endpoint)
                runs[mode].append(us)
                print(f"[round {round_no + 1}] {mode:>4}: {us:.1f} µs CPU/request", flush=True)
    median = {mode: statistics.median(values) for mode, values in runs.items()}
    best = {mode: min(values) for mode, values in runs.items()}
    print()
    print(f"{args.rounds} interleaved rounds, each the best of {args.repeats} x {args.requests}")
    print()
    print("| mode | CPU µs/request (median) | (best) | vs off (median) | vs none (median) |")
    print("|---|---:|---:|---:|---:|")
    for mode in MODE_NAMES:
        print(
            f"| {mode} | {median[mode]:.1f} | {best[mode]:.1f} | "
            f"{median[mode] - median['off']:+.1f} | {median[mode] - median['none']:+.1f} |"
        )
    print(f"\ntracing off, span-site checks: {off_sites_ns():.0f} ns per request (timeit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
