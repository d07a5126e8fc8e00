"""``python -m benchmarks.fastpath_layers``: CPU of the predict fast path's own layers.

A plain cache hit passes telemetry, the guard (API key on, as deployed), ``answer_predict``
and the answer's composer before and after its one Redis lookup. Here the service answers at
once (a fixed fresh prediction), so what is timed is those layers alone, in one process on
uvloop, with none of the noise of sockets, Redis or other processes: steady to a few tenths
of a microsecond, so changes worth one or two microseconds can be compared, which the
end-to-end benchmarks on this shared box cannot resolve (docs/measurements.md).

Prints the median (and minimum) of ``--rounds`` rounds of ``--requests`` calls each for the
whole fast path (``serve``), ``answer_predict`` alone, the answer's composer alone, what a hit
does with its lookup's reply (the cached prediction decoded, the entity's record, the
freshness rule, the answer composed), and a baseline: the same loop awaiting a coroutine that
does nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from gateway.api.fastpath import PredictFastPath
from gateway.api.predict import Answer, _single, answer_predict
from gateway.cache import CachedPrediction
from gateway.config import AuthSettings, LimitSettings, Settings
from gateway.guard import Guard
from gateway.keys import mint, write_keys_file
from gateway.service import Prediction, _fresh_hit
from gateway.spec import ModelSpec, load_specs
from gateway.store import EntityRecord
from gateway.telemetry.http import HttpTelemetry

SPEC = load_specs(Path(__file__).resolve().parents[1] / "config" / "models.yaml")["fraud_scorer"]
MODEL = SPEC.name
PREDICTION = Prediction("card-000001", (0.25,), "cache", 12.3456, 60.5, ())
BODY = b'{"entity_id":"card-000001"}'
NOW = time.time()
CACHED = CachedPrediction((0.25,), "1", NOW - 12.3456, NOW - 60.5).encode()
STORED: list[bytes | None] = [b"1.5"] * len(SPEC.features)


def answer_from_record() -> Answer:
    """What a hit does with its lookup's reply: the record, the freshness rule, the answer."""
    record = EntityRecord(STORED, NOW - 60.5, CachedPrediction.decode(CACHED))
    prediction = _fresh_hit(SPEC, "1", "card-000001", record, NOW)
    if prediction is None:
        raise RuntimeError("the benchmark's cached prediction is not a fresh hit")
    return _single(SPEC, "1", prediction, "id-1")


class AnsweringService:
    """What the fast path asks of the service, answered at once with a fresh hit."""

    served_versions = {MODEL: "1"}

    def spec(self, model: str) -> ModelSpec:
        return SPEC

    async def predict_entity(
        self, spec: ModelSpec, entity_id: str, *, mode: str = "prefer", timeout_s: Any = None
    ) -> Prediction:
        return PREDICTION


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        key, entry = mint("bench", ["*"])
        keys_file = Path(tmp) / "keys.yaml"
        write_keys_file(keys_file, [entry])
        settings = Settings(
            auth=AuthSettings(keys_file=keys_file), limits=LimitSettings(max_in_flight=256)
        )
        guard = Guard.from_settings(settings)
    telemetry = HttpTelemetry(models=[MODEL], routes=[], slow_request_s=10.0)
    fast_path = PredictFastPath(guard=guard, telemetry=telemetry, max_body_bytes=65_536)
    service = AnsweringService()
    headers = [
        (b"host", b"gw"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + key.encode()),
        (b"content-length", b"%d" % len(BODY)),
    ]

    async def respond(status: int, answer_headers: Any, content: bytes) -> None:
        return None

    async def nothing() -> None:
        return None

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "method": "POST",
            "path": f"/v1/models/{MODEL}/predict",
            "headers": headers,
            "state": {"service": service},
        }

    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "baseline (an empty coroutine)": nothing,
        "serve (the whole fast path)": lambda: fast_path.serve(scope(), BODY, MODEL, respond),
        "answer_predict": lambda: answer_predict(
            service,  # type: ignore[arg-type]
            MODEL,
            headers,
            BODY,
            65_536,
        ),
        "the answer's composer": lambda: nothing_after(_single(SPEC, "1", PREDICTION, "id-1")),
        "a hit from its lookup's reply": lambda: nothing_after(answer_from_record()),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            started = time.process_time()
            for _ in range(requests):
                await call()
            results[name].append((time.process_time() - started) / requests * 1e6)
    return results


async def nothing_after(_: object) -> None:
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    results = uvloop.run(measure(args.requests, args.rounds))
    print(f"CPU µs per call, median (min) of {args.rounds} rounds of {args.requests:,} calls")
    print_medians("what", results)
    return 0


def print_medians(what: str, results: dict[str, list[float]]) -> None:
    """A markdown table: each case's median and minimum over rounds (µs)."""
    print(f"| {what} | µs | min |\n|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
