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

Per-entity data travels as few, large arguments: redis-py packs each argument in Python
(~1.5 µs), so a commit of 1,024 predictions as 2,048 arguments cost more client CPU than
everything else the commit does. A chunk's ids and records go as one ``blob`` plus the byte
length of each piece (``_packed``), which Lua cuts apart (binary-safe: any id, any record);
feature reads name positions of the snapshot list and the script builds the keys.

Scripts carry a ``#!lua`` shebang, so Redis refuses a writing script up front when it is out
of memory instead of failing it half-way. Feature and prediction keys are built inside the
scripts from the ids (``prefix .. id``) rather than declared in KEYS: fine on a standalone
Redis, which the gateway requires; on a Redis Cluster those keys live in many slots anyway.
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
"""Entities per feature-read script call: bounds how long one call holds Redis (~2 ms)."""

# Cut ARGV[blob] into the pieces whose byte lengths ARGV[lengths] lists ("12,87,12,90").
_UNPACK = """
local function unpacked(lengths, blob)
  local pieces, pos = {}, 1
  for n in string.gmatch(lengths, '%d+') do
    pieces[#pieces + 1] = string.sub(blob, pos, pos + n - 1)
    pos = pos + n
  end
  return pieces
end
"""

# KEYS: owner, done, counts, failed, samples, meta.
# ARGV: token, chunk, prediction ttl, state ttl, invalid count, stale count, prediction key
#       prefix, lengths, blob (id 1, record 1, id 2, record 2, ...), sample count, samples...
_COMMIT = f"""#!lua
{_UNPACK}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GETBIT', KEYS[2], ARGV[2]) == 1 then return 0 end
local pieces = unpacked(ARGV[8], ARGV[9])
local ttl, prefix = ARGV[3], ARGV[7]
for i = 1, #pieces, 2 do
  redis.call('SET', prefix .. pieces[i], pieces[i + 1], 'EX', ttl)
end
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
redis.call('HINCRBY', KEYS[3], 'scored', #pieces / 2)
redis.call('HINCRBY', KEYS[3], 'invalid', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'stale', ARGV[6])
redis.call('HINCRBY', KEYS[3], 'chunks', 1)
redis.call('HDEL', KEYS[4], ARGV[2])
local n_samples = tonumber(ARGV[10])
if n_samples > 0 and redis.call('LLEN', KEYS[5]) < {SAMPLE_LIMIT} then
  redis.call('RPUSH', KEYS[5], unpack(ARGV, 11, 10 + n_samples))
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

# SCAN snapshot (no complete id index). KEYS: owner, seen (set), ids (list), scan.
# ARGV: token, next cursor, state ttl, entity ids...
# An id goes to the end of the list only the first time SADD sees it: SCAN's repeats (and a
# page scanned again after a crash) add nothing. RPUSH takes 1,000 ids per call (unpack()'s
# stack limit is ~8,000 values).
_SCAN_PAGE = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local new = {}
for i = 4, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then new[#new + 1] = ARGV[i] end
end
for i = 1, #new, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(new, i, math.min(i + 999, #new)))
end
redis.call('HSET', KEYS[4], 'mode', 'scan', 'cursor', ARGV[2])
if ARGV[2] == '0' then redis.call('HSET', KEYS[4], 'complete', '1') end
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return 1
"""

# Index snapshot. KEYS: owner, ids (list), scan.
# ARGV: token, cursor the page was read after ('' = the start), cursor after it (the page's
#       last id), last page (0/1), state ttl, lengths, blob (the page's ids of this shard).
# Index pages come in strictly increasing id order, so there are no repeats to filter: the
# cursor check alone makes a page that is saved twice (a retried call whose reply was lost)
# append nothing the second time.
_INDEX_PAGE = f"""#!lua
{_UNPACK}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('HGET', KEYS[3], 'cursor') or '') ~= ARGV[2] then return 0 end
local ids = unpacked(ARGV[6], ARGV[7])
for i = 1, #ids, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('HSET', KEYS[3], 'mode', 'index', 'cursor', ARGV[3])
if ARGV[4] == '1' then redis.call('HSET', KEYS[3], 'complete', '1') end
for i = 2, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# Index snapshot of a whole namespace (no shard to filter by): the page is copied inside Redis.
# KEYS: owner, index, ids (list), scan. ARGV: token, page size, state ttl.
# Each call continues after the saved cursor, so a retried call (lost reply) copies the next
# page, never the same one twice. Returns {ids copied, 1 if the index is exhausted}.
_INDEX_COPY = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local cursor = redis.call('HGET', KEYS[4], 'cursor') or ''
local first = cursor == '' and '-' or '(' .. cursor
local count = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', KEYS[2], first, '+', 'BYLEX', 'LIMIT', 0, count)
for i = 1, #ids, 1000 do
  redis.call('RPUSH', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
local last_page = #ids < count
redis.call('HSET', KEYS[4], 'mode', 'index', 'cursor', ids[#ids] or cursor)
if last_page then redis.call('HSET', KEYS[4], 'complete', '1') end
for i = 3, 4 do redis.call('EXPIRE', KEYS[i], ARGV[3]) end
return {#ids, last_page and 1 or 0}
"""

# KEYS: owner, meta, ids, seen. ARGV: token, status, finished_at, drop the snapshot (0/1).
_FINISH = """#!lua
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[2], 'status', ARGV[2], 'finished_at', ARGV[3])
if ARGV[4] == '1' then redis.call('DEL', KEYS[3], KEYS[4]) end
return 1
"""

# KEYS: ids (the snapshot list). ARGV: first position, last position, feature key prefix,
# field names... Returns {ids, text}: the ids at those positions and one CSV line per id,
# fields in ARGV order, an empty field where the hash has none (one bulk reply the client
# parses with pyarrow).
_READ_FEATURES = """#!lua flags=no-writes
local ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
local prefix, fields = ARGV[3], {unpack(ARGV, 4)}
local concat, lines = table.concat, {}
for i, id in ipairs(ids) do
  local values = redis.call('HMGET', prefix .. id, unpack(fields))
  -- concat fails on a missing field (false): only then fill the gaps with ''
  local ok, line = pcall(concat, values, ',')
  if not ok then
    for j = 1, #values do
      if not values[j] then values[j] = '' end
    end
    line = concat(values, ',')
  end
  lines[i] = line
end
return {ids, concat(lines, '\\n')}
"""


@asynccontextmanager
async def translated(what: str) -> AsyncIterator[None]:
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
        self._scan_page = client.register_script(_SCAN_PAGE)
        self._index_page = client.register_script(_INDEX_PAGE)
        self._index_copy = client.register_script(_INDEX_COPY)
        self._finish = client.register_script(_FINISH)
        self._read = client.register_script(_READ_FEATURES)

    # -- job state ---------------------------------------------------------------------------
    async def discard(self) -> None:
        """``--restart``: forget the checkpoint (predictions already written stay)."""
        async with translated("discarding the checkpoint"):
            await self._client.delete(*self.keys.all())

    async def open(self, job_id: str, config: JobConfig, token: str) -> CheckpointState:
        """Take the job over (fencing out any older process) and read its checkpoint."""
        keys, ttl = self.keys, self._state_ttl_s
        async with translated("opening the checkpoint"):
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
        async with translated("reading the checkpoint"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(keys.meta)
            pipe.get(keys.done)
            pipe.hgetall(keys.counts)
            pipe.hgetall(keys.failed)
            pipe.lrange(keys.samples, 0, -1)
            pipe.hgetall(keys.scan)
            raw_meta, done, counts, failed, samples, scan = await pipe.execute()
        meta = meta or _text_map(raw_meta)
        counts_text = _text_map(counts)
        # The cursor stays bytes: in an index snapshot it is an entity id.
        mode = scan.get(b"mode")
        return CheckpointState(
            created_at=float(meta.get("created_at", "0")),
            status=meta.get("status", "running"),
            total=int(meta["total"]) if "total" in meta else None,
            done_bitmap=done or b"",
            scored=int(counts_text.get("scored", 0)),
            invalid=int(counts_text.get("invalid", 0)),
            stale=int(counts_text.get("stale", 0)),
            chunks_done=int(counts_text.get("chunks", 0)),
            failed={int(k): FailedChunk.decode(v) for k, v in failed.items()},
            samples=[Failure.decode(s) for s in samples],
            # A checkpoint from before the id index has a SCAN cursor and no mode.
            snapshot_mode=(None if not scan else "index" if mode == b"index" else "scan"),
            snapshot_cursor=scan.get(b"cursor", b""),
            snapshot_complete=scan.get(b"complete") == b"1",
        )

    async def set_total(self, total: int) -> None:
        async with translated("writing the checkpoint"):
            await self._client.hset(self.keys.meta, "total", str(total))

    async def commit_chunk(
        self,
        token: str,
        chunk: int,
        ids: Sequence[bytes],
        records: Sequence[bytes],
        *,
        key_prefix: str,
        prediction_ttl_s: int,
        invalid: int,
        stale: int,
        samples: Sequence[Failure],
    ) -> bool:
        """Write a chunk's predictions (``key_prefix + id`` → record) and record the chunk,
        atomically. False: it was already committed (a retry after a reply was lost). Raises
        JobFenced if the job was taken."""
        keys = self.keys
        pieces: list[bytes] = [b""] * (2 * len(ids))
        pieces[0::2] = ids
        pieces[1::2] = records
        lengths, blob = _packed(pieces)
        args: list[EncodableT] = [
            token,
            chunk,
            prediction_ttl_s,
            self._state_ttl_s,
            invalid,
            stale,
            key_prefix,
            lengths,
            blob,
            len(samples),
        ]
        args.extend(s.encode() for s in samples)
        async with translated(f"committing chunk {chunk}"):
            result = await self._commit(
                keys=[keys.owner, keys.done, keys.counts, keys.failed, keys.samples, keys.meta],
                args=args,
            )
        return self._fenced_check(result, chunk)

    async def mark_failed(self, token: str, chunk: int, record: FailedChunk) -> None:
        keys = self.keys
        async with translated(f"recording failed chunk {chunk}"):
            result = await self._mark_failed(
                keys=[keys.owner, keys.done, keys.failed],
                args=[token, chunk, record.encode(), self._state_ttl_s],
            )
        self._fenced_check(result, chunk)

    async def finish(self, token: str, *, complete: bool, drop_snapshot: bool) -> None:
        keys = self.keys
        async with translated("finishing the job"):
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
    async def index_is_complete(self, index: str, marker: str) -> bool:
        """The id index exists and ``reindex-features`` marked it as listing every entity."""
        async with translated("reading the feature index"):
            return int(await self._client.exists(index, marker)) == 2

    async def index_page(self, index: str, after: bytes, count: int) -> list[bytes]:
        """Up to ``count`` ids of the index after ``after`` (b"" = from the first), in order."""
        start = b"(" + after if after else b"-"
        async with translated("reading the feature index"):
            ids = await self._client.zrange(index, start, b"+", bylex=True, offset=0, num=count)
        return [i if isinstance(i, bytes) else str(i).encode() for i in ids]

    async def add_index_page(
        self, token: str, after: bytes, last: bytes, *, complete: bool, ids: Sequence[bytes]
    ) -> bool:
        """Append a page's ids (read after ``after``, ending at ``last``) to the snapshot.
        False: this page was saved already (a retried call)."""
        keys = self.keys
        lengths, blob = _packed(ids)
        async with translated("writing the snapshot"):
            result = await self._index_page(
                keys=[keys.owner, keys.ids, keys.scan],
                args=[token, after, last, int(complete), self._state_ttl_s, lengths, blob],
            )
        return self._fenced_check(result, -1)

    async def copy_index_page(self, token: str, index: str, count: int) -> tuple[int, bool]:
        """Copy the next page of the index (after the saved cursor) to the snapshot, inside
        Redis. Returns the ids copied and whether the index is exhausted."""
        keys = self.keys
        async with translated("writing the snapshot"):
            result = await self._index_copy(
                keys=[keys.owner, index, keys.ids, keys.scan],
                args=[token, count, self._state_ttl_s],
            )
        if result == -1:
            self._fenced_check(result, -1)
        copied, last_page = result
        return int(copied), bool(last_page)

    async def scan_page(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        async with translated("scanning the feature store"):
            next_cursor, keys = await self._client.scan(cursor, match=match, count=count)
        return int(next_cursor), [k if isinstance(k, bytes) else str(k).encode() for k in keys]

    async def add_scan_page(self, token: str, next_cursor: int, ids: Sequence[str]) -> None:
        keys = self.keys
        async with translated("writing the snapshot"):
            result = await self._scan_page(
                keys=[keys.owner, keys.seen, keys.ids, keys.scan],
                args=[token, str(next_cursor), self._state_ttl_s, *ids],
            )
        self._fenced_check(result, -1)

    async def snapshot_size(self) -> int:
        async with translated("reading the snapshot"):
            return int(await self._client.llen(self.keys.ids))

    # -- features -------------------------------------------------------------------------------
    async def read_snapshot_features(
        self, start: int, stop: int, key_prefix: str, fields: Sequence[str]
    ) -> tuple[list[bytes], bytes]:
        """The ids at snapshot positions [start, stop) and their features as CSV text, one
        line per id (fields in order, empty where the hash has none)."""
        keys, step = [self.keys.ids], READ_KEYS_PER_CALL
        async with translated("reading features"):
            parts = await asyncio.gather(
                *(
                    self._read(keys=keys, args=[i, min(i + step, stop) - 1, key_prefix, *fields])
                    for i in range(start, stop, step)
                )
            )
        ids: list[bytes] = []
        for part_ids, _ in parts:
            ids.extend(part_ids)
        return ids, b"\n".join(text for _, text in parts)

    async def read_features(
        self, keys: Sequence[bytes], fields: Sequence[str]
    ) -> list[list[bytes | None]]:
        """Pipelined HMGET: the slow, literal path for values the CSV reply cannot carry."""
        async with translated("reading features"):
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            return list(await pipe.execute())


def _packed(pieces: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Byte lengths ("12,87,…") and concatenation of ``pieces``: Lua's ``unpacked``."""
    return ",".join(map(str, map(len, pieces))).encode(), b"".join(pieces)


def _text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
