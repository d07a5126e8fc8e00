"""The request mix of loadtests/locustfile.py, kept free of Locust so unit tests can import it.

Both users (REST and gRPC) draw their calls here, so the two transports send the same mix:
``draw_hit`` / ``draw_miss`` / ``draw_batch`` pick entities and cache modes, the users only
encode them. Importing locust monkey-patches the standard library, which a test process must
not get as a side effect: hence no Locust import in this module.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MODEL = "fraud_scorer"
NAMESPACE = "card"  # the model's entity namespace (config/models.yaml: entity.namespace)
GRPC_PORT = 50051  # the gateway's default gRPC port (GATEWAY_GRPC_PORT, helm grpcPort)

HIT = "predict:hit"
MISS = "predict:miss"
BATCH = "predict:batch"
PUSH = "features:push"
GRPC_PREFIX = "grpc:"
"""gRPC request names are the REST ones with this prefix: one SLO row per transport."""

WEIGHT_SCALE = 1000
"""Task weights are integers out of this, so ratios down to 0.001 keep their share."""


def task_weights(hit_ratio: float, batch_ratio: float, push_ratio: float = 0.0) -> dict[str, int]:
    """Integer weights out of ``WEIGHT_SCALE`` per request name.

    ``batch_ratio`` and ``push_ratio`` are shares of all requests; ``hit_ratio`` splits the
    remaining single-entity predictions into hits and misses.
    """
    ratios = {"--hit-ratio": hit_ratio, "--batch-ratio": batch_ratio, "--push-ratio": push_ratio}
    for flag, ratio in ratios.items():
        if not 0 <= ratio <= 1:
            raise ValueError(f"{flag} must be within [0, 1], got {ratio}")
    if batch_ratio + push_ratio > 1:
        raise ValueError("--batch-ratio + --push-ratio must not exceed 1")
    batch = round(WEIGHT_SCALE * batch_ratio)
    push = round(WEIGHT_SCALE * push_ratio)
    single = WEIGHT_SCALE - batch - push
    hit = round(single * hit_ratio)
    return {HIT: hit, MISS: single - hit, BATCH: batch, PUSH: push}


def grpc_weights(hit_ratio: float, batch_ratio: float) -> dict[str, int]:
    """The gRPC user's weights: the same predictions, no pushes (the gRPC API has no push RPC)."""
    weights = task_weights(hit_ratio, batch_ratio)
    del weights[PUSH]
    return {GRPC_PREFIX + name: weight for name, weight in weights.items()}


def sent_names(weights: Mapping[str, int]) -> set[str]:
    """Request names a user with these weights sends (the SLO gate requires only these)."""
    return {name for name, weight in weights.items() if weight > 0}


def read_entity_ids(path: Path) -> list[str]:
    """The first column of a CSV with a header row (the file the features were loaded from)."""
    with path.open(newline="") as fh:
        rows = csv.reader(fh)
        next(rows, None)
        return [row[0] for row in rows if row]


@dataclass(frozen=True)
class EntityPool:
    """Entity ids of the loaded data set, split by what each request type may touch."""

    ids: Sequence[str]
    hot: Sequence[str]
    """Pre-warmed at test start; ``predict:hit`` draws only from here."""
    cold: Sequence[str]
    """Never pre-warmed; pushes go here. A push deletes the entity's cached prediction, so
    pushing to hot ids would turn the next hits of those ids into misses."""


def entity_pool(ids: Sequence[str], hot_count: int, seed: int = 7) -> EntityPool:
    """A fixed-seed hot sample (the same in every process of a run) and the rest as cold.

    When the hot set covers every id, pushes fall back to the hot set: each push then costs
    one hit (the next request for that id is scored by Triton and cached again).
    """
    if not ids:
        raise ValueError("no entity ids: the entities file is empty")
    hot = random.Random(seed).sample(list(ids), min(max(hot_count, 1), len(ids)))
    hot_set = set(hot)
    cold = [i for i in ids if i not in hot_set]
    return EntityPool(ids=list(ids), hot=hot, cold=cold or hot)


@dataclass(frozen=True)
class Call:
    """One prediction request, independent of the transport that encodes it."""

    entity_ids: tuple[str, ...]
    bypass: bool = False
    """``cache: bypass``: always scored by Triton (and written back)."""
    features: Mapping[str, float] = field(default_factory=dict)
    """Request overrides: a what-if score that never reads or writes the cache."""


def draw_hit(pool: EntityPool, rng: random.Random) -> Call:
    return Call((rng.choice(pool.hot),))


def draw_miss(pool: EntityPool, rng: random.Random) -> Call:
    """Half bypass, half an ``amount`` override: both reach Triton, by the two ways clients do."""
    entity = rng.choice(pool.ids)
    if rng.random() < 0.5:
        return Call((entity,), bypass=True)
    return Call((entity,), features={"amount": round(rng.uniform(1, 2000), 2)})


def draw_batch(pool: EntityPool, rng: random.Random, size: int) -> Call:
    return Call(tuple(rng.sample(pool.ids, min(size, len(pool.ids)))))


def draw_push(pool: EntityPool, rng: random.Random, now: float) -> tuple[str, dict[str, Any]]:
    """An entity and its ``PUT /v1/features/card/{id}`` body, with ``now`` as event time.

    The values are what a card-transaction stream pushes after a transaction (its amount,
    time, distance, channel and the refreshed velocity counters), within the bounds that
    config/models.yaml declares (tests/unit/test_locust_mix.py checks them with the gateway's
    own validation).
    """
    features: dict[str, Any] = {
        "amount": round(min(rng.lognormvariate(3.8, 1.0), 50_000.0), 2),
        "hour_of_day": time.gmtime(now).tm_hour,
        "distance_from_last_txn_km": round(min(rng.expovariate(1 / 5), 20_000.0), 1),
        "is_online": rng.random() < 0.4,
        "txn_count_1h": rng.randint(0, 6),
        "txn_count_24h": rng.randint(1, 40),
    }
    return rng.choice(pool.cold), {"features": features, "event_time": round(now, 3)}


def default_grpc_target(host: str | None) -> str:
    """``--host``'s host name with the gateway's gRPC port; ``127.0.0.1:50051`` without one.

    Right for the local stack and an in-cluster Service (both ports on one name); behind an
    HTTP ingress gRPC has its own address: pass ``--grpc-target`` then.
    """
    hostname = urlsplit(host).hostname if host else None
    if not hostname:
        return f"127.0.0.1:{GRPC_PORT}"
    return f"[{hostname}]:{GRPC_PORT}" if ":" in hostname else f"{hostname}:{GRPC_PORT}"
