"""Online feature layout: one Redis hash per entity, values plus their event time.

``gw:f:<namespace>:<entity>`` holds one field per feature (decimal text) and ``_ts``, the
event time (Unix seconds) the values are valid as of. Models sharing an entity namespace share
its features. Writes are ordered by event time: an update older than what is stored is
dropped, so late or replayed events never roll an entity's features back.

``gw:fi:<namespace>`` is the namespace's *id index*: a sorted set of every entity id with a
feature hash, all scores 0, so members are in byte order and ``ZRANGE … BYLEX`` pages through
them from any id on. The feature writer adds the id in the same script call that writes the
hash, so the index never lags the hashes it covers. The batch job lists a namespace's
entities from it instead of SCANning the whole keyspace (docs/batch-scoring.md).
Hashes written before the index existed, or by anything but the gateway's writer, are not in
it: ``python -m gateway reindex-features`` adds them, drops ids whose hash is gone, and then
sets ``gw:fi:<namespace>:complete``. Only an index with that marker is trusted to list every
entity; without it the job falls back to SCAN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

FEATURE_PREFIX = "gw:f"
INDEX_PREFIX = "gw:fi"
EVENT_TIME_FIELD = "_ts"


def feature_key(namespace: str, entity_id: str) -> str:
    return f"{FEATURE_PREFIX}:{namespace}:{entity_id}"


def index_key(namespace: str) -> str:
    """The namespace's id index (sorted set). Namespaces are ``[A-Za-z_][A-Za-z0-9_]*``, so
    neither this nor the marker below can collide with a feature key."""
    return f"{INDEX_PREFIX}:{namespace}"


def index_complete_key(namespace: str) -> str:
    """Set by ``reindex-features`` once the index lists every feature hash of the namespace."""
    return f"{INDEX_PREFIX}:{namespace}:complete"


@dataclass(frozen=True, slots=True)
class FeatureUpdate:
    """New values for some of an entity's features, valid as of ``event_time``."""

    entity_id: str
    values: Mapping[str, float]
    event_time: float


@dataclass(frozen=True, slots=True)
class FeatureWriteReport:
    applied: int
    """Entities whose features were written (and their cached predictions invalidated)."""
    skipped_older: int
    """Updates dropped because the stored features have a newer event time."""


def encode_values(values: Mapping[str, float]) -> list[str]:
    """Flat ``[field, value, ...]``; the text form keeps floats exact through Redis."""
    flat: list[str] = []
    for name, value in values.items():
        flat.append(name)
        flat.append(_encode_number(value))
    return flat


def encode_event_time(event_time: float) -> str:
    if not math.isfinite(event_time):
        raise ValueError(f"non-finite event time {event_time!r}")
    return repr(float(event_time))


def _encode_number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite feature value {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))
