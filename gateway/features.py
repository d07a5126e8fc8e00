"""Online feature layout: one Redis hash per entity, values plus the time they were written.

``gw:f:<namespace>:<entity>`` holds one field per feature (decimal text) and ``_ts``, the Unix
time of the last write. Models sharing an entity namespace share its features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

FEATURE_PREFIX = "gw:f"
WRITTEN_AT_FIELD = "_ts"


def feature_key(namespace: str, entity_id: str) -> str:
    return f"{FEATURE_PREFIX}:{namespace}:{entity_id}"


def encode_features(values: Mapping[str, float], written_at: float) -> dict[str, str]:
    """Hash fields for a write; ``repr`` keeps floats exact through the text round trip."""
    fields: dict[str, str] = {name: _encode_number(v) for name, v in values.items()}
    fields[WRITTEN_AT_FIELD] = repr(written_at)
    return fields


def _encode_number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite feature value {value!r}")
    return str(int(value)) if float(value).is_integer() else repr(float(value))
