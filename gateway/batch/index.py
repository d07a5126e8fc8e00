"""``python -m gateway reindex-features``: (re)build a namespace's id index and mark it complete.

The feature writer (``RedisStore.write_features``) adds every id it stores to the namespace's
id index ``gw:fi:<namespace>`` in the same script call. Hashes written before that writer was
deployed, or by anything else (a hand-made ``HSET``, another tool), are not in it, so the
batch job trusts the index only once this command has marked it complete
(``gw:fi:<namespace>:complete``); until then it lists entities by SCAN. Run it once after every
writer runs a version that maintains the index (and again after writing hashes by other
means); it is idempotent and safe while writers and jobs run:

1. SCAN ``gw:f:<namespace>:*`` and add each id whose hash still exists (checked in the same
   script call as the add, so a hash deleted meanwhile leaves no stale entry);
2. walk the index and drop ids whose hash is gone (checked and removed in one call, so an id
   a writer has just stored again stays);
3. set the marker.

Each call handles at most ``_BATCH`` ids, so no call holds Redis for more than a few ms.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.batch.store import translated
from gateway.errors import FeatureStoreUnavailable, SpecError
from gateway.features import feature_key, index_complete_key, index_key

if TYPE_CHECKING:
    # Imported when used: ``python -m gateway`` imports this module for its flags only.
    import redis.asyncio as redis

    from gateway.config import Settings

_BATCH = 1000
"""Ids per script call."""

# KEYS: the index, then feature hashes; ARGV: the id of each hash. Returns the ids added.
_ADD = """#!lua
local added = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    added = added + redis.call('ZADD', KEYS[1], 'NX', 0, ARGV[i - 1])
  end
end
return added
"""

# KEYS: the index, then feature hashes; ARGV: the id of each hash. Returns the ids removed.
_PRUNE = """#!lua
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
"""


@dataclass(frozen=True, slots=True)
class ReindexReport:
    namespace: str
    scanned: int
    """Feature keys SCAN returned (a key may be returned more than once)."""
    added: int
    """Ids that were not in the index."""
    removed: int
    """Index entries whose hash no longer exists."""
    indexed: int
    """Ids in the index at the end."""
    seconds: float


async def reindex_features(
    client: redis.Redis, namespace: str, *, note: Callable[[str], None] = lambda _: None
) -> ReindexReport:
    """Add every feature hash of ``namespace`` to its id index, drop entries without a hash,
    and mark the index complete."""
    started = time.perf_counter()
    index = index_key(namespace)
    prefix = feature_key(namespace, "").encode()
    add = client.register_script(_ADD)
    prune = client.register_script(_PRUNE)
    scanned = added = removed = 0
    async with translated(f"reindexing namespace {namespace!r}"):
        cursor = 0
        while True:
            cursor, page = await client.scan(cursor, match=prefix + b"*", count=_BATCH)
            keys = _raw(page)
            if keys:
                ids = [key[len(prefix) :] for key in keys]
                added += int(await add(keys=[index, *keys], args=ids))
                scanned += len(keys)
                note(f"{scanned:,} feature keys scanned, {added:,} ids added")
            if cursor == 0:
                break
        after = b"-"
        while True:
            ids = _raw(await client.zrange(index, after, b"+", bylex=True, offset=0, num=_BATCH))
            if not ids:
                break
            removed += int(await prune(keys=[index, *(prefix + i for i in ids)], args=ids))
            after = b"(" + ids[-1]
        await client.set(index_complete_key(namespace), repr(time.time()))
        indexed = int(await client.zcard(index))
    return ReindexReport(
        namespace=namespace,
        scanned=scanned,
        added=added,
        removed=removed,
        indexed=indexed,
        seconds=time.perf_counter() - started,
    )


def _raw(replies: Sequence[object]) -> list[bytes]:
    # The client does not decode replies: these are bytes already.
    return [r if isinstance(r, bytes) else str(r).encode() for r in replies]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="index the entity namespace of this model (spec)")
    which.add_argument("--namespace", help="index this entity namespace (gw:f:<namespace>:*)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status 0: indexed and marked complete; 1: Redis failed (rerun); 2: bad arguments."""
    namespace: str = args.namespace
    if args.model:
        from gateway.spec import load_specs

        try:
            specs = load_specs(settings.spec_path)
        except SpecError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.model not in specs:
            print(f"error: model {args.model!r} is not in {settings.spec_path}", file=sys.stderr)
            return 2
        namespace = specs[args.model].entity_namespace
    try:
        report = asyncio.run(_reindex(settings, namespace))
    except FeatureStoreUnavailable as e:
        print(f"error: {e.detail} (rerun to retry; it is idempotent)", file=sys.stderr)
        return 1
    print(
        f"namespace {report.namespace!r}: {report.indexed:,} entities indexed "
        f"({report.added:,} added, {report.removed:,} without features removed, "
        f"{report.scanned:,} keys scanned) in {report.seconds:.2f} s; the index is complete"
    )
    return 0


async def _reindex(settings: Settings, namespace: str) -> ReindexReport:
    from gateway.store import open_redis

    async with open_redis(settings.redis) as client:
        return await reindex_features(client, namespace)
