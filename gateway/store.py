"""RedisStore: the gateway's only Redis user (features and prediction cache).

Every predict request costs at most one Redis round trip (requests of one event-loop iteration
share it: gateway/microbatch.py): pre-packed commands (gateway/resp.py) with, per entity, an
HMGET of the declared features plus their write time and a GET of the cached prediction, sent
on the store's pipelined connection (gateway/redis_pipe.py). Everything else (feature writes,
claims, pings) goes through the redis-py client and its pool.
Redis errors become ``FeatureStoreUnavailable`` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from gateway.breaker import CircuitBreaker
from gateway.cache import CachedPrediction, prediction_key
from gateway.config import RedisSettings
from gateway.errors import FeatureStoreUnavailable
from gateway.features import (
    EVENT_TIME_FIELD,
    FeatureUpdate,
    FeatureWriteReport,
    encode_event_time,
    encode_values,
    feature_key,
    index_key,
)
from gateway.redis_pipe import RedisPipe
from gateway.resp import HmgetCommand, pack_get, pack_set_ex
from gateway.spec import ModelSpec
from gateway.telemetry.calls import redis_call

REFRESH_PREFIX = "gw:r"


def refresh_key(model: str, version: str, entity_id: str) -> str:
    return f"{REFRESH_PREFIX}:{model}:{version}:{entity_id}"


class EntityRecord(NamedTuple):
    """One per entity looked up: a NamedTuple, immutable and cheaper to build than a frozen
    dataclass."""

    stored: list[bytes | None] | None
    """Stored feature values in spec order, or None when the entity has no features."""
    features_at: float | None
    """Event time of the stored features."""
    cached: CachedPrediction | None


NO_RECORD = EntityRecord(stored=None, features_at=None, cached=None)
"""What the service scores from when the feature store cannot be read (degraded mode)."""


@asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[redis.Redis]:
    """A pooled client with bounded timeouts; closed when the block exits."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        password=settings.resolved_password(),
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        # One immediate retry heals connections a Redis restart broke; redis-py's default
        # (three retries with backoff up to seconds) would turn an outage into a hang.
        retry=Retry(NoBackoff(), 1),
    )
    client = redis.Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.aclose()


class RedisStore:
    """Reads and writes entity features and cached predictions; :meth:`aclose` closes the
    lookups' connection (the client is its owner's to close)."""

    def __init__(self, client: redis.Redis, *, breaker: CircuitBreaker | None = None) -> None:
        self._client = client
        self._pipe = RedisPipe(client)  # connects at the first lookup or write-back
        self.breaker = breaker or CircuitBreaker("redis")
        # The HMGET command per model, its field list packed once instead of per request.
        self._hmget: dict[str, HmgetCommand] = {}
        self._write_script = client.register_script(_WRITE_FEATURES_LUA)

    async def aclose(self) -> None:
        await self._pipe.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    async def lookup(
        self,
        spec: ModelSpec,
        version: str,
        entity_ids: Sequence[str],
        read_cache: Sequence[bool],
    ) -> list[EntityRecord]:
        """Features (and, where asked, the cached prediction) of each entity, one round trip."""
        hmget = self._hmget.get(spec.name)
        if hmget is None:
            hmget = HmgetCommand([*(f.name for f in spec.features), EVENT_TIME_FIELD])
            self._hmget[spec.name] = hmget
        breaker = self.breaker
        if not breaker.allow():
            raise FeatureStoreUnavailable("feature store failing: circuit open")
        commands: list[bytes] = []
        for entity_id, with_cache in zip(entity_ids, read_cache, strict=True):
            commands.append(hmget.pack(feature_key(spec.entity_namespace, entity_id)))
            if with_cache:
                commands.append(pack_get(prediction_key(spec.name, version, entity_id)))
        with redis_call("lookup", spec.name, len(entity_ids)):
            try:
                replies = await self._pipe.roundtrip(commands)
            except (RedisError, OSError) as e:
                breaker.record_failure()
                raise FeatureStoreUnavailable("feature store unavailable") from e
            except BaseException:
                breaker.release_probe()
                raise
        breaker.record_success()

        records: list[EntityRecord] = []
        position = 0
        for with_cache in read_cache:
            values: list[bytes | None] = replies[position]
            position += 1
            raw_cached = None
            if with_cache:
                raw_cached = replies[position]
                position += 1
            written_at = values.pop()
            has_features = written_at is not None or any(v is not None for v in values)
            records.append(
                EntityRecord(
                    stored=values if has_features else None,
                    features_at=_to_float(written_at),
                    cached=CachedPrediction.decode(raw_cached) if raw_cached else None,
                )
            )
        return records

    async def write_predictions(
        self, spec: ModelSpec, entries: Iterable[tuple[str, CachedPrediction]]
    ) -> None:
        commands = [
            pack_set_ex(
                prediction_key(spec.name, prediction.model_version, entity_id),
                prediction.encode(),
                spec.cache_ttl_s,
            )
            for entity_id, prediction in entries
        ]
        with redis_call("write_predictions", spec.name, len(commands)):
            try:
                await self._pipe.roundtrip(commands)
            except (RedisError, OSError) as e:
                raise FeatureStoreUnavailable("prediction cache write failed") from e

    async def claim(self, key: str, ttl_ms: int) -> bool:
        """SET NX with expiry: True for the one caller (in any replica) that got ``key``."""
        try:
            return bool(await self._client.set(key, b"1", nx=True, px=ttl_ms))
        except (RedisError, OSError) as e:
            raise FeatureStoreUnavailable("feature store unavailable") from e

    async def write_features(
        self,
        namespace: str,
        updates: Iterable[FeatureUpdate],
        *,
        invalidate: Sequence[tuple[str, str]] = (),
        chunk_size: int = 1000,
    ) -> FeatureWriteReport:
        """Apply feature updates in event-time order, in pipelined chunks.

        Each update is one atomic script call: dropped if the stored event time is newer,
        otherwise written together with the deletion of the entity's cached prediction for
        every ``(model, version)`` in ``invalidate``. (A cached prediction records the event
        time of its features, so it is stale even where the deletion raced a write-back.)
        Either way the same call adds the id to the namespace's id index (``index_key``), so
        the index never misses an entity this writer stored.
        """
        applied = skipped = 0
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        index = index_key(namespace)
        try:
            for update in updates:
                keys = [feature_key(namespace, update.entity_id), index]
                keys.extend(prediction_key(m, v, update.entity_id) for m, v in invalidate)
                args = [
                    encode_event_time(update.event_time),
                    update.entity_id,
                    *encode_values(update.values),
                ]
                # With a pipeline as client this only queues EVALSHA (loaded at execute).
                await self._write_script(keys=keys, args=args, client=pipe)
                pending += 1
                if pending == chunk_size:
                    replies = await pipe.execute()
                    applied, skipped = _tally(replies, applied, skipped)
                    pending = 0
            if pending:
                applied, skipped = _tally(await pipe.execute(), applied, skipped)
        except (RedisError, OSError) as e:
            raise FeatureStoreUnavailable("feature write failed") from e
        return FeatureWriteReport(applied=applied, skipped_older=skipped)


# KEYS[1]: the feature hash; KEYS[2]: the namespace's id index; KEYS[3..]: cached predictions
# to drop. ARGV[1]: event time; ARGV[2]: entity id; ARGV[3..]: field, value pairs.
# Returns 1 if applied, 0 if older. The id is indexed in both cases: an older update means the
# hash exists, and indexing it there too heals hashes written before the index existed.
# The shebang makes Redis refuse the whole call up front when out of memory, so a hash is
# never written without its index entry.
_WRITE_FEATURES_LUA = """#!lua
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[2])
local stored = redis.call('HGET', KEYS[1], '_ts')
if stored and tonumber(stored) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], '_ts', ARGV[1], unpack(ARGV, 3))
if #KEYS > 2 then redis.call('DEL', unpack(KEYS, 3)) end
return 1
"""


def _tally(replies: list[object], applied: int, skipped: int) -> tuple[int, int]:
    done = sum(1 for r in replies if r == 1)
    return applied + done, skipped + len(replies) - done


def _to_float(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
