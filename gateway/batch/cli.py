"""``python -m gateway batch-score``: the batch scoring job's command line.

Exit status: 0 every entity of the shard is scored; 1 some entities are invalid or failed
(or the run was interrupted, or a dependency was down at start): rerun to retry; 2 the job
cannot run as asked (flags, source, spec, checkpoint of another configuration); 3 another
process took the job over.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING

import orjson

from gateway.batch.errors import BatchError
from gateway.batch.options import JobOptions
from gateway.batch.sharding import Shard, parse_shard
from gateway.config import Settings
from gateway.errors import GatewayError, SpecError

if TYPE_CHECKING:
    from gateway.batch.report import Summary

JOB_ID_ENV = "GATEWAY_BATCH_JOB_ID"
"""Default ``--job-id``; the Helm chart sets it to the Kubernetes Job's name, so a retried
pod of the same Job resumes while the next scheduled Job starts afresh."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = JobOptions(model="", source="")
    parser.add_argument("--model", required=True, help="model (from the spec) to score with")
    parser.add_argument(
        "--source",
        required=True,
        help="'feature-store' (every entity of the model's namespace) or a .csv/.parquet file",
    )
    parser.add_argument("--shard", type=_shard, default="0/1", help="i/n: this worker's shard")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="rows per Triton call and per checkpointed chunk (at most Triton's max_batch_size)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="Triton calls in flight"
    )
    parser.add_argument(
        "--job-id",
        default=os.environ.get(JOB_ID_ENV) or None,
        help=f"checkpoint name (env {JOB_ID_ENV}; default: from model, version and source)",
    )
    parser.add_argument("--restart", action="store_true", help="discard the checkpoint first")
    parser.add_argument(
        "--retries", type=int, default=defaults.retries, help="per chunk, on Triton/Redis errors"
    )
    parser.add_argument(
        "--retry-backoff-s",
        type=float,
        default=defaults.retry_backoff_s,
        help="first retry's delay; doubles per retry",
    )
    parser.add_argument(
        "--triton-timeout-s", type=float, default=defaults.triton_timeout_s, help="per call"
    )
    parser.add_argument(
        "--redis-timeout-s", type=float, default=defaults.redis_timeout_s, help="per round trip"
    )
    parser.add_argument(
        "--checkpoint-ttl-s",
        type=int,
        default=defaults.state_ttl_s,
        help="how long the checkpoint outlives its last write",
    )
    parser.add_argument(
        "--progress", choices=["auto", "tty", "log", "off"], default=defaults.progress
    )
    parser.add_argument("--progress-interval-s", type=float, default=defaults.progress_interval_s)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging

    configure_logging(settings.log_level)
    options = JobOptions(
        model=args.model,
        source=args.source,
        shard=args.shard,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        job_id=args.job_id,
        restart=args.restart,
        retries=args.retries,
        retry_backoff_s=args.retry_backoff_s,
        triton_timeout_s=args.triton_timeout_s,
        redis_timeout_s=args.redis_timeout_s,
        state_ttl_s=args.checkpoint_ttl_s,
        progress=args.progress,
        progress_interval_s=args.progress_interval_s,
    )
    try:
        summary = asyncio.run(_run(settings, options))
    except BatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_status
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except GatewayError as e:  # Redis or Triton down before the first chunk
        print(f"error: {type(e).__name__}: {e.detail} (rerun to retry)", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(summary.as_dict()).decode() + "\n")
    else:
        print(summary.text())
    return summary.exit_status


async def _run(settings: Settings, options: JobOptions) -> Summary:
    from gateway.batch.job import run_batch_job

    # SIGTERM (Kubernetes) or Ctrl-C: start no new chunk, let the ones in flight commit.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await run_batch_job(settings, options, stop=stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
