"""BatchStore: the batch job's only Redis user (checkpoint, snapshot, bulk reads and writes).

Every state change is one Lua script, which Redis runs atomically (a script is a transaction:
no other command runs in between, and a client that dies mid-call cannot leave it half-run).
Scripts instead of ``MULTI``/``EXEC`` for two measured reasons (docs/batch-scoring.md):

* redis-py spends ~20 µs of client CPU per command queued in a transaction (each reply is
  read and parsed one by one), so a ``MULTI``/``EXEC`` of 1,024 ``SET``s costs ~22 µs per
  entity on the job's one core; the same writes as one script call cost ~3 µs (plus ~2.5 µs
  in Redis either way). Feature reads likewise: pipelined HMGET ~30 µs of client CPU per
  entity, the read script ~3 µs (and ~7 µs in Redis).
* the commit must check the owner token and the chunk's done bit *and* write; with
  ``WATCH``/``MULTI`` that is three round trips and an optimistic retry loop, in a script it
  is one call.

Scripts carry a ``#!lua`` shebang, so Redis refuses a writing script up front when it is out
of memory instead of failing it half-way. They touch only keys passed in KEYS (standalone
Redis; a Redis Cluster would need the job's keys and the prediction keys in one slot).
Redis errors become ``FeatureStoreUnavailable`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from gateway.batch.checkpoint import (
    SAMPLE_LIMIT,
    CheckpointState,
    FailedChunk,
    Failure,
    JobConfig,
    JobKeys,
)
from gateway.batch.errors import JobFenced
from gateway.errors import FeatureStoreUnavailable

READ_KEYS_PER_CALL = 256
"""Keys per feature-read script call: bounds how long one call holds Redis (~2 ms)."""

# KEYS: owner, done, counts, failed, samples, meta, then one prediction key per scored entity.
# ARGV: token, chunk, prediction ttl, state ttl, invalid count, sample count, samples...,
#       then one prediction value per prediction key.
_COMMIT = f"""#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GETBIT', KEYS[2], ARGV[2]) == 1 then return 0 end
local n_samples = tonumber(ARGV[6])
local offset = n_samples
for i = 7, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + offset], 'EX', ARGV[3])
end
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], 'scored', #KEYS - 6)
redis.call('HINCRBY', KEYS[3], 'invalid', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'chunks', 1)
redis.call('HDEL', KEYS[4], ARGV[2])
if n_samples > 0 and redis.call('LLEN', KEYS[5]) < {SAMPLE_LIMIT} then
  redis.call('RPUSH', KEYS[5], unpack(ARGV, 7, 6 + n_samples))
  redis.call('LTRIM', KEYS[5], 0, {SAMPLE_LIMIT - 1})
end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""

# KEYS: owner, done, failed. ARGV: token, chunk, record, state ttl.
_MARK_FAILED = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GETBIT', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: owner, seen (set), ids (list), scan. ARGV: token, next cursor, state ttl, entity ids...
# An id goes to the end of the list only the first time SADD sees it: SCAN's repeats (and a
# page scanned again after a crash) add nothing. RPUSH takes 1,000 ids per call (unpack()'s
# stack limit is ~8,000 values).
_SNAPSHOT_PAGE = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local new = {}
for i = 4, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then new[#new + 1] = ARGV[i] end
end
for i = 1, #new, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(new, i, math.min(i + 999, #new)))
end
redis.call('HSET', KEYS[4], 'cursor', ARGV[2])
if ARGV[2] == '0' then redis.call('HSET', KEYS[4], 'complete', '1') end
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""

# KEYS: owner, meta, ids, seen. ARGV: token, status, finished_at, drop the snapshot (0/1).
_FINISH = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'status', ARGV[2], 'finished_at', ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[3], KEYS[4]) end
return 1
"""

# KEYS: feature hash keys. ARGV: field names. One CSV line per key, fields in ARGV order, an
# empty field where the hash has none: one bulk reply the client parses with pyarrow.
_READ_FEATURES = """#!lua flags=no-writes
local lines = {}
for i, key in ipairs(KEYS) do
  local values = redis.call('HMGET', key, unpack(ARGV))
  for j = 1, #values do
    if not values[j] then values[j] = '' end
  end
  lines[i] = table.concat(values, ',')
end
return table.concat(lines, '\\n')
"""


@asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as e:
        raise FeatureStoreUnavailable(f"{what}: {type(e).__name__}: {e}") from e


class BatchStore:
    """Redis I/O of one job and shard (``keys``); the owner token fences every write."""

    def __init__(self, client: redis.Redis, keys: JobKeys, *, state_ttl_s: int) -> None:
        self._client = client
        self.keys = keys
        self._state_ttl_s = state_ttl_s
        self._commit = client.register_script(_COMMIT)
        self._mark_failed = client.register_script(_MARK_FAILED)
        self._snapshot_page = client.register_script(_SNAPSHOT_PAGE)
        self._finish = client.register_script(_FINISH)
        self._read = client.register_script(_READ_FEATURES)

    # -- job state ---------------------------------------------------------------------------
    async def discard(self) -> None:
        """``--restart``: forget the checkpoint (predictions already written stay)."""
        async with _translated("discarding the checkpoint"):
            await self._client.delete(*self.keys.all())

    async def open(self, job_id: str, config: JobConfig, token: str) -> CheckpointState:
        """Take the job over (fencing out any older process) and read its checkpoint."""
        keys, ttl = self.keys, self._state_ttl_s
        async with _translated("opening the checkpoint"):
            pipe = self._client.pipeline(transaction=False)
            pipe.set(keys.owner, token, ex=ttl)
            # A resumed job's whole state lives another TTL from now, snapshot included.
            for key in keys.all():
                pipe.expire(key, ttl)
            pipe.hgetall(keys.meta)
            meta = _text_map((await pipe.execute())[-1])
            if not meta:
                created_at = time.time()
                fields: dict[FieldT, EncodableT] = {
                    "status": "running",
                    "created_at": repr(created_at),
                }
                fields.update(config.as_meta())
                pipe = self._client.pipeline(transaction=True)
                pipe.hset(keys.meta, mapping=fields)
                pipe.expire(keys.meta, ttl)
                await pipe.execute()
                return CheckpointState(created_at=created_at)
            config.check_resumable(job_id, meta)
            return await self.read_state(meta)

    async def read_state(self, meta: dict[str, str] | None = None) -> CheckpointState:
        keys = self.keys
        async with _translated("reading the checkpoint"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(keys.meta)
            pipe.get(keys.done)
            pipe.hgetall(keys.counts)
            pipe.hgetall(keys.failed)
            pipe.lrange(keys.samples, 0, -1)
            pipe.hgetall(keys.scan)
            raw_meta, done, counts, failed, samples, scan = await pipe.execute()
        meta = meta or _text_map(raw_meta)
        counts_text, scan_text = _text_map(counts), _text_map(scan)
        return CheckpointState(
            created_at=float(meta.get("created_at", "0")),
            status=meta.get("status", "running"),
            total=int(meta["total"]) if "total" in meta else None,
            done_bitmap=done or b"",
            scored=int(counts_text.get("scored", 0)),
            invalid=int(counts_text.get("invalid", 0)),
            chunks_done=int(counts_text.get("chunks", 0)),
            failed={int(k): FailedChunk.decode(v) for k, v in failed.items()},
            samples=[Failure.decode(s) for s in samples],
            scan_cursor=int(scan_text.get("cursor", 0)),
            scan_complete=scan_text.get("complete") == "1",
        )

    async def set_total(self, total: int) -> None:
        async with _translated("writing the checkpoint"):
            await self._client.hset(self.keys.meta, "total", str(total))

    async def commit_chunk(
        self,
        token: str,
        chunk: int,
        predictions: Sequence[tuple[str, bytes]],
        *,
        prediction_ttl_s: int,
        invalid: int,
        samples: Sequence[Failure],
    ) -> bool:
        """Write a chunk's predictions and record it, atomically. False: it was already
        committed (a retry after a reply was lost). Raises JobFenced if the job was taken."""
        keys = self.keys
        script_keys: list[str] = [
            keys.owner,
            keys.done,
            keys.counts,
            keys.failed,
            keys.samples,
            keys.meta,
        ]
        script_keys.extend(key for key, _ in predictions)
        args: list[str | bytes | int] = [
            token,
            chunk,
            prediction_ttl_s,
            self._state_ttl_s,
            invalid,
            len(samples),
        ]
        args.extend(s.encode() for s in samples)
        args.extend(value for _, value in predictions)
        async with _translated(f"committing chunk {chunk}"):
            result = await self._commit(keys=script_keys, args=args)
        return self._fenced_check(result, chunk)

    async def mark_failed(self, token: str, chunk: int, record: FailedChunk) -> None:
        keys = self.keys
        async with _translated(f"recording failed chunk {chunk}"):
            result = await self._mark_failed(
                keys=[keys.owner, keys.done, keys.failed],
                args=[token, chunk, record.encode(), self._state_ttl_s],
            )
        self._fenced_check(result, chunk)

    async def finish(self, token: str, *, complete: bool, drop_snapshot: bool) -> None:
        keys = self.keys
        async with _translated("finishing the job"):
            result = await self._finish(
                keys=[keys.owner, keys.meta, keys.ids, keys.seen],
                args=[
                    token,
                    "complete" if complete else "running",
                    repr(time.time()),
                    int(drop_snapshot),
                ],
            )
        self._fenced_check(result, -1)

    @staticmethod
    def _fenced_check(result: int, chunk: int) -> bool:
        if result == -1:
            raise JobFenced(
                "another process took this job over (same --job-id and --shard); stopping "
                f"before chunk {chunk}"
                if chunk >= 0
                else "another process took this job over"
            )
        return result == 1

    # -- feature-store snapshot ---------------------------------------------------------------
    async def scan_page(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        async with _translated("scanning the feature store"):
            next_cursor, keys = await self._client.scan(cursor, match=match, count=count)
        return int(next_cursor), [k if isinstance(k, bytes) else str(k).encode() for k in keys]

    async def add_snapshot_page(self, token: str, next_cursor: int, ids: Sequence[str]) -> None:
        keys = self.keys
        async with _translated("writing the snapshot"):
            result = await self._snapshot_page(
                keys=[keys.owner, keys.seen, keys.ids, keys.scan],
                args=[token, str(next_cursor), self._state_ttl_s, *ids],
            )
        self._fenced_check(result, -1)

    async def snapshot_size(self) -> int:
        async with _translated("reading the snapshot"):
            return int(await self._client.llen(self.keys.ids))

    async def snapshot_range(self, start: int, stop: int) -> list[str]:
        """Entity ids at positions [start, stop) of the snapshot."""
        async with _translated("reading the snapshot"):
            ids = await self._client.lrange(self.keys.ids, start, stop - 1)
        return [_text(i) for i in ids]

    # -- features -------------------------------------------------------------------------------
    async def read_features_csv(self, keys: Sequence[str], fields: Sequence[str]) -> bytes:
        """The fields of each hash as CSV text, one line per key (empty where absent)."""
        groups = [keys[i : i + READ_KEYS_PER_CALL] for i in range(0, len(keys), READ_KEYS_PER_CALL)]
        async with _translated("reading features"):
            parts = await asyncio.gather(*(self._read(keys=g, args=fields) for g in groups))
        return b"\n".join(parts)

    async def read_features(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> list[list[bytes | None]]:
        """Pipelined HMGET: the slow, literal path for values the CSV reply cannot carry."""
        async with _translated("reading features"):
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            return list(await pipe.execute())


def _text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
