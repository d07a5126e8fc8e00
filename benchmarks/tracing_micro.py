"""``python -m benchmarks.tracing_micro``: telemetry CPU per request, without I/O or network.

Complements ``benchmarks.tracing_overhead`` (real stack, wrk, noisy on a shared machine): a
FastAPI app with the gateway's telemetry middleware and a predict-like route that passes the
same span sites as the real miss path (validate, Redis lookup, Triton call, cache write-back;
no I/O behind them) is driven in-process through ASGI. Each tracing mode runs in its own
process (tracing is configured per process from ``OTEL_*``), exporting over OTLP/HTTP to a
local sink. Reports CPU µs per request, best of ``--repeats`` (least disturbed), and the
difference to ``off``: what tracing itself costs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
from typing import Any

from benchmarks.tracing_overhead import MODES
from devstack.otlp_sink import OtlpSink


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one_mode(requests: int, repeats: int) -> float:
    from fastapi import FastAPI, Response

    from gateway.telemetry import tracing
    from gateway.telemetry.calls import redis_call, triton_call
    from gateway.telemetry.http import install_telemetry

    app = FastAPI()

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str) -> Response:
        tracing.call("validate", lambda: None)
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

    async def send(message: dict[str, Any]) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tracing_micro")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode is not None:  # the child process of one mode
        print(json.dumps({"us": _one_mode(args.requests, args.repeats)}))
        return 0
    results: dict[str, float] = {}
    with OtlpSink(decode=False) as sink:
        for mode, otel in MODES.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env.update(otel)
            if mode != "off":
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
            cmd = [sys.executable, "-m", "benchmarks.tracing_micro", "--mode", mode]
            cmd += ["--requests", str(args.requests), "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])["us"]
            print(f"{mode:>4}: {results[mode]:.1f} µs CPU/request", flush=True)
    print()
    print("| tracing | CPU µs/request (best) | added vs off |")
    print("|---|---:|---:|")
    for mode, us in results.items():
        print(f"| {mode} | {us:.1f} | {us - results['off']:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
