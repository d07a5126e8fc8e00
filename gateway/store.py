"""RedisStore: the gateway's only Redis user (features and prediction cache).

Every predict request costs exactly one Redis round trip: a non-transactional pipeline with,
per entity, an HMGET of the declared features plus their write time and a GET of the cached
prediction. Redis errors become ``FeatureStoreUnavailable`` here and nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from gateway.cache import CachedPrediction, prediction_key
from gateway.config import RedisSettings
from gateway.errors import FeatureStoreUnavailable
from gateway.features import WRITTEN_AT_FIELD, encode_features, feature_key
from gateway.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class EntityRecord:
    stored: list[bytes | None] | None
    """Stored feature values in spec order, or None when the entity has no features."""
    features_at: float | None
    """Write time of the stored features."""
    cached: CachedPrediction | None


@asynccontextmanager
async def open_redis(settings: RedisSettings) -> AsyncIterator[redis.Redis]:
    """A pooled client with bounded timeouts; closed when the block exits."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.url,
        password=settings.resolved_password(),
        max_connections=settings.max_connections,
        # Waiting for a free pooled connection is bounded like the round trip itself.
        timeout=settings.socket_timeout_s,
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
    """Reads and writes entity features and cached predictions."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        # The HMGET field list per model, built once instead of on every request.
        self._hmget_fields: dict[str, list[str]] = {}

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
        fields = self._hmget_fields.get(spec.name)
        if fields is None:
            fields = [f.name for f in spec.features]
            fields.append(WRITTEN_AT_FIELD)
            self._hmget_fields[spec.name] = fields
        pipe = self._client.pipeline(transaction=False)
        for entity_id, with_cache in zip(entity_ids, read_cache, strict=True):
            pipe.hmget(feature_key(spec.entity_namespace, entity_id), fields)
            if with_cache:
                pipe.get(prediction_key(spec.name, version, entity_id))
        try:
            replies = await pipe.execute()
        except (RedisError, OSError) as e:
            raise FeatureStoreUnavailable("feature store unavailable") from e

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
        pipe = self._client.pipeline(transaction=False)
        for entity_id, prediction in entries:
            key = prediction_key(spec.name, prediction.model_version, entity_id)
            pipe.set(key, prediction.encode(), ex=spec.cache_ttl_s)
        try:
            await pipe.execute()
        except (RedisError, OSError) as e:
            raise FeatureStoreUnavailable("prediction cache write failed") from e

    async def write_features(
        self,
        namespace: str,
        rows: Iterable[tuple[str, Mapping[str, float]]],
        written_at: float,
        *,
        chunk_size: int = 1000,
    ) -> int:
        """Store feature hashes in pipelined chunks; returns the number of entities written."""
        written = 0
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        try:
            for entity_id, values in rows:
                fields: dict[FieldT, EncodableT] = {
                    name: value for name, value in encode_features(values, written_at).items()
                }
                pipe.hset(feature_key(namespace, entity_id), mapping=fields)
                pending += 1
                if pending == chunk_size:
                    await pipe.execute()
                    written, pending = written + pending, 0
            if pending:
                await pipe.execute()
                written += pending
        except (RedisError, OSError) as e:
            raise FeatureStoreUnavailable("feature write failed") from e
        return written


def _to_float(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
