"""Online feature layout: one Redis hash per entity, values plus their event time.

``gw:f:<namespace>:<entity>`` holds one field per feature (decimal text) and ``_ts``, the
event time (Unix seconds) the values are valid as of. Models sharing an entity namespace share
its features. Writes are ordered by event time: an update older than what is stored is
dropped, so late or replayed events never roll an entity's features back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

FEATURE_PREFIX = "gw:f"
EVENT_TIME_FIELD = "_ts"


def feature_key(namespace: str, entity_id: str) -> str:
    return f"{FEATURE_PREFIX}:{namespace}:{entity_id}"


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
