"""``python -m benchmarks.variants``: what each hot-path change bought, measured side by side.

Each variant is a git ref (checked out into a temporary worktree) plus environment settings.
All variants run against the same Redis and Triton (response cache off), one gateway process
(1 uvicorn worker) at a time, in alternating rounds so that drift of a shared machine hits
every variant alike. Per variant and path (miss = ``cache: bypass``, hit = pre-warmed cache):
``wrk -t2 -c32`` throughput and gateway CPU ms/request from ``/proc``; medians over rounds.

    python -m benchmarks.variants --rounds 3 \\
        --variant "before=3b1777f" --variant "no-tick-batching=HEAD:GATEWAY_TICK_BATCHING=false" \\
        --variant "now=HEAD"

Writes a markdown table to stdout (and ``--out`` if given). Loopback only; every process and
worktree it creates is removed in ``finally``.
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
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.run import (
    LUA_COMMON,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    prewarm,
    run_wrk,
    without_queue_policy,
)
from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"miss": (10_000, ',"cache":"bypass"'), "hit": (2_000, "")}


@dataclass
class Variant:
    name: str
    ref: str
    env: dict[str, str]
    tree: Path | None = None
    results: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """path -> [(req/s, CPU ms/request)] per round."""


def parse_variant(text: str) -> Variant:
    """``name=ref[:KEY=VALUE,...]``"""
    name, _, rest = text.partition("=")
    ref, _, settings = rest.partition(":")
    env = dict(item.split("=", 1) for item in settings.split(",") if item)
    if not name or not ref:
        raise argparse.ArgumentTypeError(f"expected name=ref[:KEY=VALUE,...], got {text!r}")
    return Variant(name, ref, env)


def checkout(ref: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), ref],
        check=True,
        capture_output=True,
    )
    return into


def measure(variant: Variant, redis_url: str, triton_url: str, args: argparse.Namespace) -> None:
    assert variant.tree is not None
    # Run from the worktree: ``python -m`` puts the working directory first on the path, so
    # the variant's ``gateway`` package is imported, not this checkout's editable install.
    with GatewayProcess(
        spec_path=SPEC,
        redis_url=redis_url,
        triton_url=triton_url,
        workers=1,
        env=variant.env,
        cwd=variant.tree,
    ) as gateway:
        assert gateway.pid is not None
        prewarm(gateway.url, PATHS["hit"][0], gateway.headers)
        lua_dir = Path(tempfile.mkdtemp(prefix="gw-variants-"))
        try:
            for path, (entities, extra) in PATHS.items():
                script = lua_dir / f"{path}.lua"
                script.write_text(LUA_COMMON + gateway_lua(entities, extra, gateway.api_key))
                run_wrk(gateway.url, script, args.connections, 2, 2)  # warm-up
                time.sleep(0.3)
                cpu0 = cpu_seconds([gateway.pid])
                out = run_wrk(gateway.url, script, args.connections, args.duration, 2)
                cpu1 = cpu_seconds([gateway.pid])
                if out["non2xx"] or out["socket_errors"]:
                    raise RuntimeError(f"{variant.name} {path}: errors during the run: {out}")
                cpu_ms = (cpu1 - cpu0) / max(out["requests"], 1) * 1000
                variant.results.setdefault(path, []).append((out["rps"], cpu_ms))
                print(f"  {variant.name:>18} {path}: {out['rps']:8.0f} req/s {cpu_ms:.3f} ms")
        finally:
            shutil.rmtree(lua_dir, ignore_errors=True)


def report(variants: list[Variant], rounds: int) -> str:
    base = variants[0]
    lines = [
        f"Medians of {rounds} alternating rounds; ratios against `{base.name}`.",
        "",
        "| variant | ref | settings | miss req/s | miss CPU ms/req | hit req/s | hit CPU ms/req "
        "| miss CPU vs first | hit CPU vs first |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def median(v: Variant, path: str, i: int) -> float:
        return statistics.median(r[i] for r in v.results[path])

    for v in variants:
        settings = ", ".join(f"`{k}={val}`" for k, val in v.env.items()) or "defaults"
        lines.append(
            f"| {v.name} | `{v.ref}` | {settings} "
            f"| {median(v, 'miss', 0):,.0f} | {median(v, 'miss', 1):.3f} "
            f"| {median(v, 'hit', 0):,.0f} | {median(v, 'hit', 1):.3f} "
            f"| {median(v, 'miss', 1) / median(base, 'miss', 1):.2f}x "
            f"| {median(v, 'hit', 1) / median(base, 'hit', 1):.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variants", description=__doc__)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk not found on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 1
    variants: list[Variant] = args.variant
    trees = Path(tempfile.mkdtemp(prefix="gw-variant-trees-"))
    redis = RedisServer()
    # As benchmarks.run does by default: no queue policy (on this CPU build it stalls requests).
    repository = without_queue_policy(ROOT / "model_repository", trees)
    triton = TritonServer(repository, cache_size_bytes=0)
    try:
        for n, v in enumerate(variants):
            v.tree = checkout(v.ref, trees / str(n))
        redis.start()
        triton.start()
        asyncio.run(load_demo(redis.url))
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for v in variants:
                measure(v, redis.url, triton.grpc_url, args)
        table = report(variants, args.rounds)
        print(table)
        if args.out is not None:
            args.out.write_text(table)
        return 0
    finally:
        triton.stop()
        redis.close()
        for v in variants:
            if v.tree is not None:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(v.tree)],
                    capture_output=True,
                )
        shutil.rmtree(trees, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
