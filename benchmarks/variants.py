"""``python -m benchmarks.variants``: what each hot-path change bought, measured side by side.

Each variant is a git ref (checked out into a temporary worktree) plus environment settings.
All variants run against the same Redis and Triton (response cache off), one gateway process
(1 uvicorn worker) at a time, in alternating rounds so that drift of a shared machine hits
every variant alike. Per variant and path (miss = ``cache: bypass``, hit = pre-warmed cache):
``wrk -t2 -c32`` throughput and gateway CPU ms/request from ``/proc``; with ``--rate`` also the
gateway CPU ms/request, p50 and p99 at that fixed open-loop rate (``benchmarks/openloop.py``),
where requests rarely share a Redis or Triton call, and Triton's own CPU per request there
(batching on the gateway's side saves Triton executions too); medians over rounds.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.run import (
    LUA_COMMON,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    prewarm,
    run_openloop,
    run_wrk,
    without_queue_policy,
)
from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"miss": (10_000, ',"cache":"bypass"'), "hit": (2_000, "")}
OPENLOOP_KIND = {"miss": "bypass", "hit": "hit"}


@dataclass
class Variant:
    name: str
    ref: str
    env: dict[str, str]
    tree: Path | None = None
    results: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """path -> [(req/s, CPU ms/request)] per round."""
    fixed: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    """path -> [(CPU ms/request, p50 ms, p99 ms, Triton CPU ms/request)] per round at
    ``--rate``."""


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


def measure(
    variant: Variant, redis_url: str, triton: TritonServer, args: argparse.Namespace
) -> None:
    assert variant.tree is not None
    # Run from the worktree: ``python -m`` puts the working directory first on the path, so
    # the variant's ``gateway`` package is imported, not this checkout's editable install.
    with GatewayProcess(
        spec_path=SPEC,
        redis_url=redis_url,
        triton_url=triton.grpc_url,
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
                if args.rate:
                    time.sleep(0.3)
                    assert triton.pid is not None
                    cpu0, triton0 = cpu_seconds([gateway.pid]), cpu_seconds([triton.pid])
                    fixed = run_openloop(
                        gateway.url, OPENLOOP_KIND[path], args.rate, args.duration, gateway.api_key
                    )
                    cpu1, triton1 = cpu_seconds([gateway.pid]), cpu_seconds([triton.pid])
                    if fixed["errors"]:
                        raise RuntimeError(f"{variant.name} {path} @{args.rate:g}/s: {fixed}")
                    n = max(fixed["requests"], 1)
                    cpu_ms = (cpu1 - cpu0) / n * 1000
                    row = (cpu_ms, fixed["p50_ms"], fixed["p99_ms"], (triton1 - triton0) / n * 1000)
                    variant.fixed.setdefault(path, []).append(row)
                    print(
                        f"  {variant.name:>18} {path} @{args.rate:g}/s: {cpu_ms:.3f} ms CPU, "
                        f"p50 {row[1]:.2f} ms, p99 {row[2]:.2f} ms, Triton {row[3]:.3f} ms CPU"
                    )
        finally:
            shutil.rmtree(lua_dir, ignore_errors=True)


def _median(rows: Sequence[tuple[float, ...]], i: int) -> float:
    """The median of column ``i`` over rounds."""
    return statistics.median(r[i] for r in rows)


def report(variants: list[Variant], rounds: int, rate: float) -> str:
    base = variants[0]
    lines = [
        f"Medians of {rounds} alternating rounds; ratios against `{base.name}`.",
        "",
        "| variant | ref | settings | miss req/s | miss CPU ms/req | hit req/s | hit CPU ms/req "
        "| miss CPU vs first | hit CPU vs first |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def median(v: Variant, path: str, i: int) -> float:
        return _median(v.results[path], i)

    for v in variants:
        settings = ", ".join(f"`{k}={val}`" for k, val in v.env.items()) or "defaults"
        lines.append(
            f"| {v.name} | `{v.ref}` | {settings} "
            f"| {median(v, 'miss', 0):,.0f} | {median(v, 'miss', 1):.3f} "
            f"| {median(v, 'hit', 0):,.0f} | {median(v, 'hit', 1):.3f} "
            f"| {median(v, 'miss', 1) / median(base, 'miss', 1):.2f}x "
            f"| {median(v, 'hit', 1) / median(base, 'hit', 1):.2f}x |"
        )
    if rate:
        lines += [
            "",
            f"At a fixed {rate:g} req/s (open loop; gateway CPU per request, latency from the "
            "scheduled send time):",
            "",
            "| variant | miss CPU ms/req | miss Triton CPU ms/req | miss p50 / p99 ms "
            "| hit CPU ms/req | hit p50 / p99 ms | miss CPU vs first | hit CPU vs first |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]

        def fixed(v: Variant, path: str, i: int) -> float:
            return _median(v.fixed[path], i)

        for v in variants:
            lines.append(
                f"| {v.name} | {fixed(v, 'miss', 0):.3f} | {fixed(v, 'miss', 3):.3f} "
                f"| {fixed(v, 'miss', 1):.2f} / {fixed(v, 'miss', 2):.2f} "
                f"| {fixed(v, 'hit', 0):.3f} "
                f"| {fixed(v, 'hit', 1):.2f} / {fixed(v, 'hit', 2):.2f} "
                f"| {fixed(v, 'miss', 0) / fixed(base, 'miss', 0):.2f}x "
                f"| {fixed(v, 'hit', 0) / fixed(base, 'hit', 0):.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variants", description=__doc__)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="also measure each path at this fixed open-loop rate (req/s; 0: skip)",
    )
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
                measure(v, redis.url, triton, args)
        table = report(variants, args.rounds, args.rate)
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
