"""Command line: ``python -m gateway serve | load-features``.

uvicorn owns the signals of the serving process: SIGINT/SIGTERM stop accepting connections,
finish in-flight requests and run the lifespan shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from gateway.config import Settings


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

    args = parser.parse_args(argv)
    settings = Settings()
    if args.spec:
        settings.spec_path = args.spec
    if args.command == "serve":
        if args.port:
            settings.http_port = args.port
        if args.workers:
            settings.workers = args.workers
        return serve_forever(settings)
    return asyncio.run(_load_features(settings, args.model, args.file))


def serve_forever(settings: Settings) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    app: Any = create_app(settings)
    if settings.workers > 1:
        # Workers rebuild Settings from the environment; pass CLI overrides through it.
        os.environ["GATEWAY_SPEC_PATH"] = str(settings.spec_path)
        os.environ["GATEWAY_HTTP_PORT"] = str(settings.http_port)
        app = "gateway.app:app_from_env"
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        access_log=False,  # no per-request INFO line on the hot path
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
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
            report = await load_features(RedisStore(client), specs[model], path)
        except IngestError as e:
            print(f"error: {path}: {e} (nothing was written)", file=sys.stderr)
            return 2
    print(
        f"loaded {report.entities} entities ({len(report.features)} features) "
        f"from {path} in {report.seconds:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
