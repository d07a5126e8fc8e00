"""Prediction cache statistics: keys per model and version, and how old they are.

Read-only and incremental (SCAN in pages, values fetched with pipelined GETs), so it is safe
to run against a production Redis; on a very large keyspace use ``--sample`` to stop early.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as redis

from gateway.cache import PREDICTION_PREFIX, CachedPrediction

AGE_BUCKETS_S: tuple[tuple[str, float], ...] = (
    ("<1m", 60),
    ("<5m", 300),
    ("<1h", 3600),
    ("<6h", 6 * 3600),
    ("<24h", 24 * 3600),
    (">=24h", float("inf")),
)


@dataclass
class VersionStats:
    keys: int = 0
    unreadable: int = 0
    ages: Counter[str] = field(default_factory=Counter)
    oldest_s: float = 0.0


async def collect(
    client: redis.Redis, *, model: str | None = None, sample: int | None = None, page: int = 1000
) -> dict[tuple[str, str], VersionStats]:
    """Stats per (model, version); ``sample`` stops after that many keys."""
    pattern = f"{PREDICTION_PREFIX}:{model or '*'}:*"
    stats: dict[tuple[str, str], VersionStats] = {}
    now = time.time()
    seen = 0
    cursor = 0
    while True:
        cursor, found = await client.scan(cursor=cursor, match=pattern, count=page)
        keys = [k if isinstance(k, bytes) else str(k).encode() for k in found]
        if keys:
            values = await client.mget(keys)
            for key, raw in zip(keys, values, strict=True):
                parts = key.decode().split(":", 4)
                if len(parts) != 5:
                    continue
                entry = stats.setdefault((parts[2], parts[3]), VersionStats())
                record = CachedPrediction.decode(raw) if isinstance(raw, bytes) else None
                if record is None:
                    # Expired between SCAN and GET, or written by something else.
                    entry.unreadable += raw is not None
                    continue
                entry.keys += 1
                age = max(0.0, now - record.scored_at)
                entry.oldest_s = max(entry.oldest_s, age)
                entry.ages[_bucket(age)] += 1
            seen += len(keys)
        if cursor == 0 or (sample is not None and seen >= sample):
            return stats


def render(stats: dict[tuple[str, str], VersionStats]) -> str:
    header = ["model", "version", "keys", *(label for label, _ in AGE_BUCKETS_S), "oldest"]
    rows = [header]
    for (model, version), entry in sorted(stats.items()):
        rows.append(
            [
                model,
                version,
                str(entry.keys),
                *(str(entry.ages[label]) for label, _ in AGE_BUCKETS_S),
                _duration(entry.oldest_s),
            ]
        )
    if len(rows) == 1:
        return "no cached predictions"
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def as_json(stats: dict[tuple[str, str], VersionStats]) -> list[dict[str, object]]:
    return [
        {
            "model": model,
            "version": version,
            "keys": entry.keys,
            "unreadable": entry.unreadable,
            "age_histogram": {label: entry.ages[label] for label, _ in AGE_BUCKETS_S},
            "oldest_s": round(entry.oldest_s, 3),
        }
        for (model, version), entry in sorted(stats.items())
    ]


def _bucket(age_s: float) -> str:
    return next(label for label, upper in AGE_BUCKETS_S if age_s < upper)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
