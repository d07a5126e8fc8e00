"""EventLog: the stream lane's only Redis Streams user.

Reads with XREADGROUP, reclaims orphaned entries with XAUTOCLAIM, and publishes results with
one Lua script that makes "publish, then acknowledge" atomic and idempotent (see ``COMMIT_LUA``).
Redis errors become ``StreamUnavailable`` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError, ResponseError

from gateway.errors import DependencyUnavailable
from gateway.stream.events import StreamEntry

DONE_PREFIX = "gw:s:done"
_ACK_CHUNK = 500  # ids per XACK call inside the script (Lua's unpack has a stack limit)


class StreamUnavailable(DependencyUnavailable):
    title = "Event stream unavailable"


def done_key(group: str, event_id: str) -> str:
    """Dedupe marker of a producer-named event (``event_id`` field)."""
    return f"{DONE_PREFIX}:{group}:{event_id}"


@dataclass(frozen=True, slots=True)
class Record:
    """One result to publish for one input entry (to the output or the dead-letter stream)."""

    entry_id: str
    marker: str
    """Dedupe marker key, or "" when the entry id itself identifies the event."""
    values: Sequence[str | bytes]
    """Field values, in the order of the ``names`` passed to ``commit``."""


@dataclass(frozen=True, slots=True)
class CommitResult:
    published: int
    """Records appended to the target stream."""
    acknowledged: int
    """Entries that were still pending and are now acknowledged (published or duplicate)."""
    latencies_ms: list[float]
    """Per published record: Redis time at commit minus the entry's append time (the entry id's
    millisecond, so up to 1 ms more than the true latency)."""


@dataclass(frozen=True, slots=True)
class Reclaimed:
    entries: list[StreamEntry]
    deleted: list[str]
    """Pending ids whose entries were trimmed from the stream before anyone acknowledged them."""
    cursor: str


@dataclass(frozen=True, slots=True)
class GroupStats:
    lag: int | None
    """Entries not yet delivered to the group (XINFO GROUPS ``lag``; None if Redis cannot tell)."""
    pending: int
    length: int


# KEYS[1]: input stream, KEYS[2]: target stream (output or dead letters).
# ARGV: group, maxlen, marker ttl (s), n field names, the names, then per record:
#   entry id, marker key ("" = none), n values.
# A record is published only if its entry is still pending in the group: once acknowledged
# (by this worker, or by another that reclaimed it while this one was slow) it is never
# published again, so redelivery cannot duplicate output. A marker, when given, additionally
# drops a second entry carrying the same event id (a producer's retried append) while it lives.
# Publishing and acknowledging happen in this one atomic script: no crash can leave an entry
# published but pending, or acknowledged but unpublished.
COMMIT_LUA = """
local group, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local nf = tonumber(ARGV[4])
local names = 5
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local published, latencies, acked = 0, {}, {}
local i = names + nf
while i <= #ARGV do
  local id, marker = ARGV[i], ARGV[i + 1]
  if #redis.call('XPENDING', KEYS[1], group, id, id, 1) > 0 then
    local fresh = true
    if marker ~= '' then
      fresh = redis.call('SET', marker, id, 'NX', 'EX', ttl)
    end
    if fresh then
      -- Both ends on the Redis clock; microseconds kept (Lua numbers reach Redis as integers,
      -- so the value travels as text).
      local appended_ms = tonumber(string.match(id, '^(%d+)'))
      local latency = tostring(math.floor((now_ms - appended_ms) * 1000 + 0.5) / 1000)
      local args = {'XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*'}
      for j = 0, nf - 1 do
        args[#args + 1] = ARGV[names + j]
        args[#args + 1] = ARGV[i + 2 + j]
      end
      args[#args + 1] = 'latency_ms'
      args[#args + 1] = latency
      redis.call(unpack(args))
      published = published + 1
      latencies[#latencies + 1] = latency
    end
    acked[#acked + 1] = id
  end
  i = i + 2 + nf
end
for k = 1, #acked, ACK_CHUNK do
  redis.call('XACK', KEYS[1], group, unpack(acked, k, math.min(k + ACK_CHUNK - 1, #acked)))
end
return {published, #acked, latencies}
""".replace("ACK_CHUNK", str(_ACK_CHUNK))


class EventLog:
    """The input stream and consumer group as one worker (``consumer``) sees them."""

    def __init__(
        self,
        client: redis.Redis,
        reader: redis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
    ) -> None:
        """``reader`` serves the blocking reads: its socket timeout exceeds the longest block,
        while ``client`` keeps the short round-trip bound for everything else."""
        self._client = client
        self._reader = reader
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._commit = client.register_script(COMMIT_LUA)

    async def ensure_group(self) -> bool:
        """Create the group (and stream) if missing, reading from the stream's start.

        Returns True when it was created. Starting at ``0`` rather than ``$`` scores events a
        producer appended before the first worker ever ran.
        """
        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise StreamUnavailable(f"cannot create consumer group: {e}") from e
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        return True

    async def read(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        """New entries for this consumer (XREADGROUP ``>``); [] when none arrived in time."""
        try:
            reply: Any = await self._reader.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as e:
            if "NOGROUP" in str(e):  # the stream or group was deleted (e.g. Redis restarted)
                await self.ensure_group()
                return []
            raise StreamUnavailable(f"XREADGROUP failed: {e}") from e
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        if not reply:
            return []
        return [StreamEntry(_text(entry_id), fields or {}) for entry_id, fields in reply[0][1]]

    async def read_own_pending(self, after_id: str, count: int) -> Reclaimed:
        """Entries already delivered to this consumer and still pending, after ``after_id``.

        They exist when a read's reply was lost (a timeout after Redis had delivered) or when
        a worker restarts under the same consumer name; re-reading them (XREADGROUP with an id
        instead of ``>``) recovers them at once instead of after ``claim_idle_ms``. Entries
        trimmed from the stream meanwhile are acknowledged and reported as deleted.
        """
        try:
            reply: Any = await self._client.xreadgroup(
                self.group, self.consumer, {self.stream: after_id}, count=count
            )
            rows = reply[0][1] if reply else []
            entries = [(_text(i), f) for i, f in rows if f]
            deleted = [_text(i) for i, f in rows if not f]
            if deleted:
                await self._client.xack(self.stream, self.group, *deleted)
            deliveries = await self._deliveries([i for i, _ in entries])
        except ResponseError as e:
            if "NOGROUP" in str(e):
                return Reclaimed([], [], "0-0")
            raise StreamUnavailable(f"XREADGROUP failed: {e}") from e
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        last = _text(rows[-1][0]) if rows else "0-0"
        return Reclaimed(
            entries=[StreamEntry(i, f, deliveries.get(i, 2)) for i, f in entries],
            deleted=deleted,
            cursor=last if len(rows) >= count else "0-0",
        )

    async def _deliveries(self, ids: list[str]) -> dict[str, int]:
        """Delivery counts of this consumer's pending entries among ``ids``."""
        if not ids:
            return {}
        pending: Any = await self._client.xpending_range(
            self.stream,
            self.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) + 10_000,
            consumername=self.consumer,
        )
        return {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    async def reclaim(self, cursor: str, *, min_idle_ms: int, count: int) -> Reclaimed:
        """Take over entries pending longer than ``min_idle_ms`` (their worker presumably died).

        XAUTOCLAIM adds one to each entry's delivery count; the counts are then read back with
        XPENDING so the caller can give up on entries that keep failing.
        """
        try:
            claim: Any = await self._client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_ms, cursor, count=count
            )
            next_cursor, claimed, deleted = claim
            entries = [(_text(i), f) for i, f in claimed if f is not None]
            deliveries = await self._deliveries([i for i, _ in entries])
        except ResponseError as e:
            if "NOGROUP" in str(e):
                return Reclaimed([], [], "0-0")
            raise StreamUnavailable(f"XAUTOCLAIM failed: {e}") from e
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        return Reclaimed(
            entries=[StreamEntry(i, f, deliveries.get(i, 2)) for i, f in entries],
            deleted=[_text(d) for d in deleted or []],
            cursor=_text(next_cursor),
        )

    async def heartbeat(self, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this worker is still working on (XCLAIM JUSTID does
        not count a delivery), so a long retry is not mistaken for a dead worker."""
        if not entry_ids:
            return
        try:
            await self._client.xclaim(
                self.stream, self.group, self.consumer, 0, list(entry_ids), justid=True
            )
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e

    async def commit(
        self,
        *,
        output: tuple[str, int, Sequence[str], Sequence[Record]] | None,
        dead_letters: tuple[str, int, Sequence[str], Sequence[Record]] | None,
        marker_ttl_s: int,
    ) -> tuple[CommitResult, CommitResult]:
        """Publish (stream, maxlen, names, records) and acknowledge, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        queued = []
        for target in (output, dead_letters):
            if target is None or not target[3]:
                queued.append(False)
                continue
            stream, maxlen, names, records = target
            args: list[str | bytes | int] = [self.group, maxlen, marker_ttl_s, len(names), *names]
            for record in records:
                args.append(record.entry_id)
                args.append(record.marker)
                args.extend(record.values)
            await self._commit(keys=[self.stream, stream], args=args, client=pipe)
            queued.append(True)
        if not any(queued):
            empty = CommitResult(0, 0, [])
            return empty, empty
        try:
            replies = iter(await pipe.execute())
        except (RedisError, OSError) as e:
            raise StreamUnavailable("commit to the event stream failed") from e
        results = []
        for was_queued in queued:
            if not was_queued:
                results.append(CommitResult(0, 0, []))
                continue
            published, acked, latencies = next(replies)
            results.append(CommitResult(int(published), int(acked), [float(x) for x in latencies]))
        return results[0], results[1]

    async def stats(self) -> GroupStats | None:
        """Lag and pending count of the group; None when the group does not exist (yet)."""
        try:
            groups: Any = await self._client.xinfo_groups(self.stream)
            length = int(await self._client.xlen(self.stream))
        except ResponseError:
            return None
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        for group in groups:
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                return GroupStats(
                    lag=None if lag is None else int(lag),
                    pending=int(group["pending"]),
                    length=length,
                )
        return None

    async def prune_consumers(self, *, idle_ms: int) -> list[str]:
        """Remove consumers of workers that are gone: nothing pending and idle for long."""
        try:
            consumers: Any = await self._client.xinfo_consumers(self.stream, self.group)
            removed = []
            for consumer in consumers:
                name = _text(consumer["name"])
                if name == self.consumer or int(consumer["pending"]) > 0:
                    continue
                if int(consumer["idle"]) >= idle_ms:
                    await self._client.xgroup_delconsumer(self.stream, self.group, name)
                    removed.append(name)
        except ResponseError:
            return []
        except (RedisError, OSError) as e:
            raise StreamUnavailable("event stream unavailable") from e
        return removed

    async def leave(self) -> bool:
        """On shutdown: delete this consumer if nothing is pending on it (else keep it, so
        its entries stay visible to XAUTOCLAIM; deleting a consumer drops its pending list)."""
        try:
            consumers: Any = await self._client.xinfo_consumers(self.stream, self.group)
            mine = [c for c in consumers if _text(c["name"]) == self.consumer]
            if mine and int(mine[0]["pending"]) == 0:
                await self._client.xgroup_delconsumer(self.stream, self.group, self.consumer)
                return True
        except (RedisError, OSError):
            return False
        return False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
