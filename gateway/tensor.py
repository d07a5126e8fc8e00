"""Assemble model input rows: request value, else stored value, else declared default."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidRequest
from gateway.spec import ModelSpec
from gateway.validation import EntityQuery

log = logging.getLogger(__name__)

_NUMPY_DTYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def build_rows(
    spec: ModelSpec,
    items: Sequence[EntityQuery],
    stored: Sequence[Sequence[bytes | None] | None],
    *,
    field_prefix: Sequence[str] | None = None,
) -> npt.NDArray[np.floating[Any]]:
    """One row per item, columns in the spec's feature order.

    ``stored[i]`` holds the feature store's values for item i in feature order (``None``
    where absent), or is None when the entity has no stored features at all.
    """
    features = spec.features
    rows = np.empty((len(items), len(features)), dtype=_NUMPY_DTYPES[spec.input_dtype])
    for i, item in enumerate(items):
        values = stored[i]
        overrides = item.overrides
        if not overrides and values is not None:
            # Nearly every miss: all stored, nothing overridden. One C-level pass; anything
            # else (a gap, a corrupt value) takes the per-feature path below.
            try:
                # float(None) raises TypeError: a gap also takes the per-feature path.
                parsed = list(map(float, cast("Sequence[bytes]", values)))
            except (TypeError, ValueError):
                pass
            else:
                if all(map(math.isfinite, parsed)):
                    rows[i] = parsed
                    continue
        for feature in features:
            j = feature.index
            value = overrides.get(j)
            if value is None and values is not None:
                raw = values[j]
                if raw is not None:
                    value = _parse_stored(raw, spec.name, feature.name)
            if value is None:
                value = feature.default
            if value is None:
                prefix = field_prefix[i] if field_prefix else ""
                raise InvalidRequest(
                    f"feature {feature.name!r} has no value for entity {item.entity_id!r}: "
                    "not in the request, not in the feature store, and no declared default",
                    field=f"{prefix}features.{feature.name}",
                )
            rows[i, j] = value
    return rows


def _parse_stored(raw: bytes, model: str, name: str) -> float | None:
    try:
        value = float(raw)  # float() parses ASCII bytes directly: no decode step
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    # Corrupt stored data is not the client's fault: fall back to the default, loudly.
    log.warning("unparseable stored feature", extra={"model": model, "feature": name})
    return None
