"""``python -m benchmarks.auth_overhead``: what access control, rate limiting and the guard cost.

One Redis, one Triton (response cache off), the demo features, and the gateway (1 uvicorn
worker, uvloop + httptools, as ``python -m gateway serve`` runs it) in five variants, each
measured on the cache-hit path (the cheapest request, so the guard's share is largest):

* ``bare``      no guard middleware at all (baseline);
* ``shed``      the guard with auth explicitly off: the in-flight bound only;
* ``auth``      API keys on (the production default);
* ``auth+rl``   API keys on and a per-client rate limit high enough never to refuse:
  one extra Redis round trip (the Lua token bucket) per request;
* ``basehttp``  the same checks as ``auth`` written as a Starlette ``BaseHTTPMiddleware``.

Per variant: ``wrk -t2 -c32`` saturation (req/s, p50/p99) and the gateway process's CPU
ms/request from /proc, in interleaved rounds (median of rounds), so drift on a shared machine
hits every variant alike. Prints a Markdown table (docs/security.md quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import ASGIApp

from benchmarks.run import (
    LUA_COMMON,
    ROOT,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    run_wrk,
    start_uvicorn,
    stop_process,
)
from devstack.redis_server import RedisServer
from gateway.api.middleware import GuardMiddleware
from gateway.api.problems import problem_response
from gateway.app import create_app
from gateway.auth import current_principal
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.guard import Guard
from gateway.keys import mint, write_keys_file
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

VARIANTS = ("bare", "shed", "auth", "auth+rl", "basehttp")
PREDICT = "/v1/models/fraud_scorer/predict"


# --- uvicorn factories (each worker builds its settings from the environment) ------------


def _guard_of(app: FastAPI) -> tuple[Middleware, Guard]:
    (entry,) = [m for m in app.user_middleware if m.cls is GuardMiddleware]
    return entry, entry.kwargs["guard"]


def app_bare() -> FastAPI:
    app = create_app(Settings())
    entry, _ = _guard_of(app)
    app.user_middleware.remove(entry)
    return app


def app_default() -> FastAPI:
    return create_app(Settings())


class BaseHTTPGuard(BaseHTTPMiddleware):
    """The guard's checks, as a BaseHTTPMiddleware (for comparison only)."""

    def __init__(self, app: ASGIApp, guard: Guard, public_paths: frozenset[str]) -> None:
        super().__init__(app)
        self._guard = guard
        self._public = public_paths

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path in self._public:
            return await call_next(request)
        guard = self._guard
        if not guard.in_flight.try_acquire():
            return problem_response(guard.overloaded())
        try:
            authorization = request.headers.get("authorization", "")
            key = authorization[7:] if authorization.lower().startswith("bearer ") else None
            model = path.split("/")[3] if path.startswith("/v1/models/") else None
            try:
                principal = guard.authenticate(key or request.headers.get("x-api-key"), model)
                await guard.check_rate(principal)
            except GatewayError as error:
                return problem_response(error)
            token = current_principal.set(principal)
            try:
                return await call_next(request)
            finally:
                current_principal.reset(token)
        finally:
            guard.in_flight.release()


def app_basehttp() -> FastAPI:
    app = create_app(Settings())
    entry, guard = _guard_of(app)
    app.user_middleware.remove(entry)
    app.add_middleware(BaseHTTPGuard, guard=guard, public_paths=entry.kwargs["public_paths"])
    return app


# --- in-process: the guard alone, no network (stable even on a busy machine) ---------------


async def _micro(redis_url: str, n: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) µs per request through each wrapper around a trivial ASGI app (median of 5
    runs). Wall includes waiting for Redis; CPU is this process's own work."""
    from gateway.api.middleware import HEALTH_PATHS
    from gateway.config import AuthSettings

    work = Path(tempfile.mkdtemp(prefix="gw-auth-micro-"))
    key, entry = mint("micro", ["*"])
    rl_key, rl_entry = mint("micro-rl", ["*"], rate_per_s=1e9, burst=10**9)
    write_keys_file(work / "keys.yaml", [entry, rl_entry])
    settings = Settings(redis={"url": redis_url}, auth=AuthSettings(keys_file=work / "keys.yaml"))
    guard = Guard.from_settings(settings)
    open_guard = Guard.from_settings(Settings(auth=AuthSettings(enabled=False)))

    async def inner(scope: dict, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        return None

    def scope(api_key: str | None) -> dict:
        headers = [(b"host", b"gw"), (b"content-type", b"application/json")]
        if api_key:
            headers.append((b"authorization", f"Bearer {api_key}".encode()))
        return {
            "type": "http", "method": "POST", "path": PREDICT, "raw_path": PREDICT.encode(),
            "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
            "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": "",
        }  # fmt: skip

    public = HEALTH_PATHS
    apps = {
        "bare": (inner, None),
        "shed": (GuardMiddleware(inner, guard=open_guard, public_paths=public), None),
        "auth": (GuardMiddleware(inner, guard=guard, public_paths=public), key),
        "auth+rl": (GuardMiddleware(inner, guard=guard, public_paths=public), rl_key),
        "basehttp": (BaseHTTPGuard(inner, guard=guard, public_paths=public), key),
    }
    out: dict[str, tuple[float, float]] = {}
    async with guard.running():
        for name, (app, api_key) in apps.items():
            request_scope = scope(api_key)
            walls, cpus = [], []
            for _ in range(5):
                started, cpu_started = time.perf_counter(), time.process_time()
                for _ in range(n):
                    await app(dict(request_scope), receive, send)
                walls.append((time.perf_counter() - started) / n * 1e6)
                cpus.append((time.process_time() - cpu_started) / n * 1e6)
            out[name] = (statistics.median(walls), statistics.median(cpus))
        # the first use of a key: SHA-256 + constant-time compare (then the LRU answers)
        assert guard.keyring is not None
        keyring = guard.keyring
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(n):
            keyring._cache.clear()
            keyring.authenticate(key)
        out["first use of a key"] = (
            (time.perf_counter() - started) / n * 1e6,
            (time.process_time() - cpu_started) / n * 1e6,
        )
    shutil.rmtree(work, ignore_errors=True)
    return out


def micro(n: int) -> None:
    import uvloop

    with RedisServer() as redis:
        results = uvloop.run(_micro(redis.url, n))
    print(f"\nin-process, {n} requests x 5 runs (median), µs per request\n")
    print("| variant | wall µs | CPU µs | CPU vs bare |")
    print("|---|---:|---:|---:|")
    bare_cpu = results["bare"][1]
    for name, (wall, cpu) in results.items():
        delta = "" if name == "first use of a key" else f"{cpu - bare_cpu:+.1f}"
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {delta} |")


# --- the run -------------------------------------------------------------------------------


def start(factory: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    target = [f"benchmarks.auth_overhead:{factory}", "--factory"]
    return start_uvicorn([*target, "--loop", "uvloop", "--http", "httptools"], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.auth_overhead", description=__doc__)
    parser.add_argument("--duration", type=float, default=6, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--hit-entities", type=int, default=2000)
    parser.add_argument(
        "--micro", type=int, metavar="N", help="only the in-process run, N requests per variant"
    )
    args = parser.parse_args(argv)
    if args.micro:
        micro(args.micro)
        return 0

    work = Path(tempfile.mkdtemp(prefix="gw-auth-bench-"))
    plain_key, plain = mint("bench", ["*"])
    limited_key, limited = mint("bench-rl", ["*"], rate_per_s=1_000_000, burst=1_000_000)
    write_keys_file(work / "keys.yaml", [plain, limited])
    redis = RedisServer()
    triton = TritonServer(ROOT / "model_repository", cache_size_bytes=0)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        redis.start()
        triton.start()
        print(f"loaded {asyncio.run(load_demo(redis.url))} demo entities", flush=True)
        base_env = {
            "GATEWAY_SPEC_PATH": str(SPEC),
            "GATEWAY_REDIS__URL": redis.url,
            "GATEWAY_TRITON__URL": triton.grpc_url,
            "GATEWAY_GRPC_PORT": str(free_port()),
            "GATEWAY_AUTH__KEYS_FILE": str(work / "keys.yaml"),
        }
        plans = {
            "bare": ("app_bare", {"GATEWAY_AUTH__ENABLED": "false"}, None),
            "shed": ("app_default", {"GATEWAY_AUTH__ENABLED": "false"}, None),
            "auth": ("app_default", {}, plain_key),
            "auth+rl": ("app_default", {}, limited_key),
            "basehttp": ("app_basehttp", {}, plain_key),
        }
        warmed = False
        for round_no in range(args.rounds):
            for variant in VARIANTS:
                factory, env, key = plans[variant]
                env = {**base_env, **env, "GATEWAY_GRPC_PORT": str(free_port())}
                proc, url = start(factory, env)
                try:
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    if not warmed:
                        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
                            for i in range(1, args.hit_entities + 1):
                                body = {"entity_id": f"card-{i:06d}"}
                                client.post(PREDICT, json=body).raise_for_status()
                        warmed = True
                    script = work / f"{variant.replace('+', '_')}.lua"
                    script.write_text(LUA_COMMON + gateway_lua(args.hit_entities, "", key))
                    run_wrk(url, script, args.connections, 2, 2)
                    cpu0 = cpu_seconds([proc.pid])
                    sat = run_wrk(url, script, args.connections, args.duration, 2)
                    cpu1 = cpu_seconds([proc.pid])
                    if sat["non2xx"] or sat["socket_errors"]:
                        raise RuntimeError(f"{variant}: errors during the run: {sat}")
                    results[variant].append(
                        {
                            "rps": sat["rps"],
                            "cpu_ms": (cpu1 - cpu0) / max(sat["requests"], 1) * 1000,
                            "p50_ms": sat["p50_ms"],
                            "p99_ms": sat["p99_ms"],
                        }
                    )
                    print(f"[round {round_no + 1}] {variant}: {results[variant][-1]}", flush=True)
                finally:
                    stop_process(proc)
    finally:
        triton.stop()
        redis.close()
        shutil.rmtree(work, ignore_errors=True)

    def med(variant: str, metric: str) -> float:
        return statistics.median(r[metric] for r in results[variant])

    base_cpu = med("bare", "cpu_ms")
    print(
        f"\nhit path, wrk -c{args.connections}, {args.duration:g} s x {args.rounds} rounds "
        "(median), 1 worker\n"
    )
    print("| variant | req/s | CPU ms/req | vs bare | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant in VARIANTS:
        delta_us = (med(variant, "cpu_ms") - base_cpu) * 1000
        print(
            f"| {variant} | {med(variant, 'rps'):,.0f} | {med(variant, 'cpu_ms'):.3f} | "
            f"{delta_us:+.0f} µs | {med(variant, 'p50_ms'):.2f} | {med(variant, 'p99_ms'):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
