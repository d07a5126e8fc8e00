"""``python -m benchmarks.miss_rows``: CPU of a plain miss's input row and its batch's tensor.

Each plain real-time miss turns its stored features into one model input row; the rows of a
tick batch go to Triton as one tensor (``raw_input_contents``). Two ways, timed side by side
in one process:

* ``numpy``: the row as ``build_rows`` fills it (a [1, features] array), the batch
  concatenated and converted to bytes (the gateway before ``pack_row``);
* ``packed``: ``pack_row``'s bytes per row (one ``struct`` pack of the parsed values), the
  batch joined.

Both give Triton the same bytes (checked before timing). ``--batch`` rows per Triton call (13:
what a saturated miss measured per call with 2 workers, docs/measurements.md; 1: a lone
miss). Prints the median (and minimum) µs per row over ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gateway.spec import load_specs
from gateway.tensor import build_rows, pack_row
from gateway.validation import EntityQuery

SPEC = load_specs(Path(__file__).resolve().parents[1] / "config" / "models.yaml")["fraud_scorer"]


def stored_rows(n: int) -> list[list[bytes | None]]:
    """Distinct fully stored entities, values as the feature store holds them (ASCII)."""
    width = len(SPEC.features)
    return [[b"%.4f" % (i * 0.37 + j * 1.5) for j in range(width)] for i in range(n)]


def numpy_batch(stored: list[list[bytes | None]]) -> bytes:
    rows = [build_rows(SPEC, [EntityQuery("e", {})], [values]) for values in stored]
    return (rows[0] if len(rows) == 1 else np.concatenate(rows)).tobytes()


def packed_batch(stored: list[list[bytes | None]]) -> bytes:
    rows = [pack_row(SPEC, "e", values) for values in stored]
    return rows[0] if len(rows) == 1 else b"".join(rows)


def measure(batch: int, batches: int, rounds: int) -> dict[str, list[float]]:
    stored = stored_rows(batch)
    if numpy_batch(stored) != packed_batch(stored):
        raise RuntimeError("the two ways give Triton different bytes")
    cases: dict[str, Callable[[list[list[bytes | None]]], bytes]] = {
        "numpy (build_rows, concatenate)": numpy_batch,
        "packed (pack_row, join)": packed_batch,
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
    parser.add_argument("--batch", type=int, default=13, help="rows per Triton call")
    parser.add_argument("--rows", type=int, default=200_000, help="rows per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results = measure(args.batch, max(1, args.rows // args.batch), args.rounds)
    print(f"CPU µs per row, batches of {args.batch}, median (min) of {args.rounds} rounds")
    print("| way | µs per row | min |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")
    numpy_us, packed_us = (statistics.median(v) for v in results.values())
    print(f"\npacked / numpy: {packed_us / numpy_us:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
