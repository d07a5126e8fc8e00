"""Command line: ``python -m gateway serve | load-features | reindex-features | keys | …``.

uvicorn owns the signals of the serving process: SIGINT/SIGTERM stop accepting connections,
finish in-flight requests (up to ``GATEWAY_SHUTDOWN_GRACE_S``) and run the lifespan shutdown
(gRPC drains within ``GATEWAY_GRPC_GRACE_S``); a drained process then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway.batch.cli import add_arguments as add_batch_arguments
from gateway.batch.index import add_arguments as add_reindex_arguments
from gateway.config import Settings
from gateway.errors import KeysFileError
from gateway.keys import add_keys_parser, run_keys
from gateway.stream.cli import COMMANDS as STREAM_COMMANDS
from gateway.stream.cli import add_commands as add_stream_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve REST (and gRPC) predictions")
    serve.add_argument("--spec", type=Path, help="model spec YAML (env GATEWAY_SPEC_PATH)")
    serve.add_argument("--port", type=int, help="HTTP port (env GATEWAY_HTTP_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (env GATEWAY_WORKERS)")

    load = commands.add_parser("load-features", help="load entity features from CSV/Parquet")
    load.add_argument("--model", required=True, help="model whose spec validates the file")
    load.add_argument("--file", type=Path, required=True, help=".csv or .parquet file")
    load.add_argument("--spec", type=Path, help="model spec YAML (env GATEWAY_SPEC_PATH)")

    stats = commands.add_parser("cache-stats", help="prediction cache keys and ages per version")
    stats.add_argument("--model", help="only this model")
    stats.add_argument("--sample", type=int, help="stop after about this many keys")
    stats.add_argument("--json", action="store_true", help="machine-readable output")

    add_keys_parser(commands)
    add_stream_commands(commands)

    batch = commands.add_parser("batch-score", help="score entities in bulk into the cache")
    batch.add_argument("--spec", type=Path, help="model spec YAML (env GATEWAY_SPEC_PATH)")
    add_batch_arguments(batch)

    reindex = commands.add_parser(
        "reindex-features", help="build a namespace's feature id index (for batch-score)"
    )
    reindex.add_argument("--spec", type=Path, help="model spec YAML (env GATEWAY_SPEC_PATH)")
    add_reindex_arguments(reindex)

    args = parser.parse_args(argv)
    if args.command == "keys":
        return run_keys(args)
    settings = Settings()
    if getattr(args, "spec", None):
        settings.spec_path = args.spec
    if args.command == "serve":
        if args.port:
            settings.http_port = args.port
        if args.workers:
            settings.workers = args.workers
        return serve_forever(settings)
    if args.command == "cache-stats":
        return asyncio.run(_cache_stats(settings, args.model, args.sample, args.json))
    if args.command == "batch-score":
        from gateway.batch.cli import run as run_batch_score

        return run_batch_score(settings, args)
    if args.command == "reindex-features":
        from gateway.batch.index import run as run_reindex

        return run_reindex(settings, args)
    if args.command in STREAM_COMMANDS:
        from gateway.stream.cli import run_command

        return run_command(args, settings)
    return asyncio.run(_load_features(settings, args.model, args.file))


def serve_forever(settings: Settings) -> int:
    from gateway.telemetry import multiproc

    # Before anything imports prometheus_client: workers must inherit the metrics directory.
    multiproc.prepare(settings.workers)

    import uvicorn

    from gateway.api.http_protocol import GatewayHttpProtocol
    from gateway.app import create_app
    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    try:
        app: Any = create_app(settings)
    except KeysFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        # Workers rebuild Settings from the environment; pass CLI overrides through it.
        os.environ["GATEWAY_SPEC_PATH"] = str(settings.spec_path)
        os.environ["GATEWAY_HTTP_PORT"] = str(settings.http_port)
        app = "gateway.app:app_from_env"
    # uvicorn re-raises SIGTERM once it has drained; a clean drain then exits 0, not 143.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        # httptools, with predict requests answered without an ASGI cycle per request.
        http=GatewayHttpProtocol,
        access_log=False,  # no per-request INFO line on the hot path
        # The gateway never reads the client address or scheme; uvicorn's proxy-headers
        # middleware would copy every request's headers into a dict to rewrite them.
        proxy_headers=False,
        server_header=False,  # says nothing about the stack, and is one header less to write
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    return 0


def _exit_after_drain(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _cache_stats(
    settings: Settings, model: str | None, sample: int | None, as_json: bool
) -> int:
    import orjson

    from gateway import cache_stats
    from gateway.store import open_redis

    async with open_redis(settings.redis) as client:
        stats = await cache_stats.collect(client, model=model, sample=sample)
    if as_json:
        print(orjson.dumps(cache_stats.as_json(stats), option=orjson.OPT_INDENT_2).decode())
    else:
        print(cache_stats.render(stats))
    return 0


async def _load_features(settings: Settings, model: str, path: Path) -> int:
    from gateway.ingest import IngestError, load_features
    from gateway.spec import load_specs
    from gateway.store import RedisStore, open_redis

    specs = load_specs(settings.spec_path)
    if model not in specs:
        print(f"error: model {model!r} is not in {settings.spec_path}", file=sys.stderr)
        return 2
    async with open_redis(settings.redis) as client:
        try:
            # Pinned versions of every model reading this namespace: their cached predictions
            # of updated entities are deleted. ("latest" ones are retired by event time.)
            namespace = specs[model].entity_namespace
            invalidate = [
                (s.name, s.triton_version)
                for s in specs.values()
                if s.entity_namespace == namespace and s.triton_version != "latest"
            ]
            report = await load_features(
                RedisStore(client), specs[model], path, invalidate=invalidate
            )
        except IngestError as e:
            print(f"error: {path}: {e} (nothing was written)", file=sys.stderr)
            return 2
    print(
        f"loaded {report.entities} entities ({len(report.features)} features, "
        f"{report.skipped_older} skipped as older than stored) "
        f"from {path} in {report.seconds:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
