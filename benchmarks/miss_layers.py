"""``python -m benchmarks.miss_layers``: CPU of the plain miss's own layers in the service.

A plain real-time miss (``predict_entity``, cache mode ``bypass``) passes the service's lookup
batcher and wait, the ladder's shortcut, its input row, the coalesced and tick-batched Triton
call and its wait, and the write-back batcher. Here the store and Triton answer at once, so
what is timed is those layers alone, in one process on uvloop, without sockets, Redis, gRPC or
other processes: steady to a few tenths of a microsecond, which the end-to-end benchmarks on
this shared box cannot resolve (docs/measurements.md). ``--batch`` requests are gathered per
loop iteration (13: what a saturated miss measured per Triton call with 2 workers; 1: a lone
miss), so the batchers make one call per batch, as under load.

Cases, µs per request: a baseline (the same number of empty coroutines gathered), the plain
miss, and a fresh hit through the same method (its lookup, the freshness rule, no Triton).

``--rows`` also times the input row and its batch's tensor two ways, side by side: ``numpy``
(``build_rows`` per request, the batch concatenated and converted to bytes: the gateway before
``pack_row``) and ``packed`` (``pack_row``'s bytes, the batch joined); both give Triton the same
bytes (checked before timing).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import uvloop

from gateway.cache import CachedPrediction
from gateway.service import EntityCacheMode, Prediction, PredictionService
from gateway.spec import ModelSpec, load_specs
from gateway.store import EntityRecord, RedisStore
from gateway.tensor import build_rows, pack_row
from gateway.triton import InferenceResult, TritonClient
from gateway.validation import EntityQuery

SPEC = load_specs(Path(__file__).resolve().parents[1] / "config" / "models.yaml")["fraud_scorer"]
NOW = time.time()


def stored_rows(n: int) -> list[list[bytes | None]]:
    """Distinct fully stored entities, values as the feature store holds them (ASCII)."""
    width = len(SPEC.features)
    return [[b"%.4f" % (i * 0.37 + j * 1.5) for j in range(width)] for i in range(n)]


# --- the service's plain miss ---------------------------------------------------------------


class InstantStore:
    """Every entity fully stored, with a cached prediction 100 s old (fresh for ``prefer``)."""

    def __init__(self) -> None:
        self.written = 0
        self._stored = stored_rows(1)[0]

    async def lookup(
        self, spec: ModelSpec, version: str, ids: Sequence[str], read_cache: Sequence[bool]
    ) -> list[EntityRecord]:
        cached = CachedPrediction((0.5,), version, NOW - 100, NOW - 60)
        return [EntityRecord(list(self._stored), NOW - 60, cached) for _ in ids]

    async def write_predictions(
        self, spec: ModelSpec, entries: Sequence[tuple[str, CachedPrediction]]
    ) -> None:
        self.written += len(entries)


class InstantTriton:
    async def infer_packed(
        self,
        spec: ModelSpec,
        version: str,
        raw: bytes,
        shape: tuple[int, ...],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        return InferenceResult(np.full((shape[0], 1), 0.25, dtype=np.float32), version)


def service() -> tuple[PredictionService, InstantStore]:
    store = InstantStore()
    return (
        PredictionService(
            {SPEC.name: SPEC},
            {SPEC.name: "1"},
            cast(RedisStore, store),
            cast(TritonClient, InstantTriton()),
            clock=lambda: NOW,
        ),
        store,
    )


async def answers(batch: int, mode: EntityCacheMode) -> tuple[list[Prediction], int]:
    """One batch of plain requests through a fresh service, as the cases make them: the
    answers, and how many predictions were written back."""
    svc, store = service()
    ids = [f"card-{i:06d}" for i in range(batch)]
    got = await asyncio.gather(
        *(svc.predict_entity(SPEC, e, mode=mode, timeout_s=1.0) for e in ids)
    )
    for _ in range(5):  # write-backs run after the answers
        await asyncio.sleep(0)
    return cast(list[Prediction], got), store.written


async def measure_service(batch: int, batches: int, rounds: int) -> dict[str, list[float]]:
    svc, _ = service()
    ids = [f"card-{i:06d}" for i in range(batch)]

    async def nothing() -> None:
        return None

    def requests(mode: EntityCacheMode) -> Callable[[], Awaitable[Any]]:
        return lambda: asyncio.gather(
            *(svc.predict_entity(SPEC, e, mode=mode, timeout_s=1.0) for e in ids)
        )

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "baseline (empty coroutines gathered)": lambda: asyncio.gather(*(nothing() for _ in ids)),
        "plain miss (bypass)": requests("bypass"),
        "fresh hit (prefer)": requests("prefer"),
    }
    for call in cases.values():  # warm: the first calls build per-model state
        for _ in range(50):
            await call()
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            started = time.process_time()
            for _ in range(batches):
                await call()
            results[name].append((time.process_time() - started) / (batches * batch) * 1e6)
    return results


# --- the input row --------------------------------------------------------------------------


def numpy_batch(stored: list[list[bytes | None]]) -> bytes:
    rows = [build_rows(SPEC, [EntityQuery("e", {})], [values]) for values in stored]
    return (rows[0] if len(rows) == 1 else np.concatenate(rows)).tobytes()


def packed_batch(stored: list[list[bytes | None]]) -> bytes:
    rows = [pack_row(SPEC, "e", values) for values in stored]
    return rows[0] if len(rows) == 1 else b"".join(rows)


def measure_rows(batch: int, batches: int, rounds: int) -> dict[str, list[float]]:
    stored = stored_rows(batch)
    if numpy_batch(stored) != packed_batch(stored):
        raise RuntimeError("the two ways give Triton different bytes")
    cases: dict[str, Callable[[list[list[bytes | None]]], bytes]] = {
        "row, numpy (build_rows, concatenate)": numpy_batch,
        "row, packed (pack_row, join)": packed_batch,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, make in cases.items():
            started = time.process_time()
            for _ in range(batches):
                make(stored)
            results[name].append((time.process_time() - started) / (batches * batch) * 1e6)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=13, help="requests per loop iteration")
    parser.add_argument("--requests", type=int, default=60_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", action="store_true", help="also time the input row two ways")
    args = parser.parse_args(argv)
    batches = max(1, args.requests // args.batch)
    results = uvloop.run(measure_service(args.batch, batches, args.rounds))
    if args.rows:
        results |= measure_rows(args.batch, batches * 4, args.rounds)
    print(
        f"CPU µs per request, {args.batch} per loop iteration, median (min) of {args.rounds} "
        f"rounds of {batches * args.batch:,} requests"
    )
    print("| case | µs | min |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
