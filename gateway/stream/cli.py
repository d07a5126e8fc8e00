"""``python -m gateway stream-worker | stream-produce``: argument parsing only.

Everything heavy is imported when a command runs, so ``gateway.__main__`` stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.config import Settings

COMMANDS = ("stream-worker", "stream-produce")


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    worker = commands.add_parser(
        "stream-worker",
        help="score events from a Redis Stream in micro-batches (env GATEWAY_STREAM__*)",
    )
    worker.add_argument("--spec", type=Path, help="model spec YAML (env GATEWAY_SPEC_PATH)")
    worker.add_argument("--consumer", help="consumer name (env GATEWAY_STREAM__CONSUMER)")
    worker.add_argument("--batch-size", type=int, help="env GATEWAY_STREAM__BATCH_MAX_SIZE")
    worker.add_argument("--batch-wait-ms", type=float, help="env GATEWAY_STREAM__BATCH_MAX_WAIT_MS")
    worker.add_argument("--metrics-port", type=int, help="env GATEWAY_STREAM__METRICS_PORT")

    produce = commands.add_parser(
        "stream-produce", help="append events (JSON lines, or demo transactions) to the stream"
    )
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", type=Path, help="JSON lines file ('-' for stdin)")
    source.add_argument("--demo", type=int, metavar="N", help="N demo card transactions")
    produce.add_argument("--model", default="fraud_scorer", help="model of events without one")
    produce.add_argument("--entities", type=int, default=10_000, help="demo: number of cards")
    produce.add_argument("--rate", type=float, help="events per second (default: as fast)")
    produce.add_argument("--spec", type=Path, help=argparse.SUPPRESS)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "stream-worker":
        return _worker(args, settings)
    return asyncio.run(_produce(args, settings))


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.logs import configure_logging
    from gateway.stream.settings import StreamSettings
    from gateway.stream.worker import serve

    overrides = {
        "consumer": args.consumer,
        "batch_max_size": args.batch_size,
        "batch_max_wait_ms": args.batch_wait_ms,
        "metrics_port": args.metrics_port,
    }
    updates = {k: v for k, v in overrides.items() if v is not None}
    if updates:
        try:
            settings.stream = StreamSettings(**{**settings.stream.model_dump(), **updates})
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    configure_logging(settings.log_level)
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(settings))
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(serve(settings))


async def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.store import open_redis
    from gateway.stream.log import StreamUnavailable
    from gateway.stream.produce import (
        demo_events,
        events_from_json_lines,
        produce,
        read_lines,
    )

    s = settings.stream
    events = (
        demo_events(args.model, args.demo, entities=args.entities)
        if args.demo is not None
        else events_from_json_lines(read_lines(args.file), args.model)
    )
    async with open_redis(settings.redis) as client:
        try:
            await produce(client, s.stream, events, maxlen=s.input_maxlen, rate=args.rate)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except StreamUnavailable as e:
            print(f"error: {e.detail}", file=sys.stderr)
            return 1
    return 0
