"""Request validation against a model's declared feature schema.

Transport-neutral: REST hands in the decoded JSON body, gRPC hands in the same shapes built
from its messages. Every rejection is an ``InvalidRequest`` naming the offending field with
a JSON-path-like name (``instances[3].features.amount``).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from gateway.errors import InvalidRequest
from gateway.spec import FeatureSpec, ModelSpec

CacheMode = Literal["prefer", "bypass", "only"]
CACHE_MODES: tuple[CacheMode, ...] = ("prefer", "bypass", "only")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SINGLE_KEYS = frozenset({"entity_id", "features", "cache"})
_BATCH_KEYS = frozenset({"instances", "cache"})
_INSTANCE_KEYS = frozenset({"entity_id", "features"})


@dataclass(frozen=True, slots=True)
class EntityQuery:
    entity_id: str
    overrides: dict[int, float]
    """Request-supplied feature values by feature index (they win over stored values)."""


@dataclass(frozen=True, slots=True)
class PredictRequest:
    items: list[EntityQuery]
    cache_mode: CacheMode
    batch: bool


def parse_predict_body(spec: ModelSpec, body: Any) -> PredictRequest:
    """Validate a decoded predict body: one entity, or ``instances`` for a batch."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", field="body")
    batch = "instances" in body
    allowed = _BATCH_KEYS if batch else _SINGLE_KEYS
    _reject_unknown_keys(body, allowed, prefix="")
    cache_mode = parse_cache_mode(body.get("cache", "prefer"))
    if not batch:
        item = parse_instance(spec, body, "", cache_mode)
        return PredictRequest(items=[item], cache_mode=cache_mode, batch=False)
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidRequest("instances must be a list", field="instances")
    if not instances:
        raise InvalidRequest("instances must not be empty", field="instances")
    if len(instances) > spec.max_batch_size:
        raise InvalidRequest(
            f"batch of {len(instances)} exceeds this model's limit of {spec.max_batch_size}",
            field="instances",
        )
    items = []
    for i, raw in enumerate(instances):
        where = f"instances[{i}]."
        if not isinstance(raw, dict):
            raise InvalidRequest("each instance must be a JSON object", field=where[:-1])
        _reject_unknown_keys(raw, _INSTANCE_KEYS, prefix=where)
        items.append(parse_instance(spec, raw, where, cache_mode))
    return PredictRequest(items=items, cache_mode=cache_mode, batch=True)


def parse_cache_mode(value: Any) -> CacheMode:
    if value not in CACHE_MODES:
        raise InvalidRequest(
            f"cache must be one of {list(CACHE_MODES)}, got {value!r}", field="cache"
        )
    return cast(CacheMode, value)


def parse_instance(
    spec: ModelSpec, raw: dict[str, Any], where: str, cache_mode: CacheMode
) -> EntityQuery:
    entity_id = parse_entity_id(spec, raw.get("entity_id"), f"{where}entity_id")
    features = raw.get("features")
    overrides: dict[int, float] = {}
    if features is not None:
        if not isinstance(features, dict):
            raise InvalidRequest("features must be a JSON object", field=f"{where}features")
        by_name = spec.feature_by_name
        for name, value in features.items():
            feature = by_name.get(name)
            if feature is None:
                raise InvalidRequest(
                    f"unknown feature {name!r} for model {spec.name!r}",
                    field=f"{where}features.{name}",
                )
            overrides[feature.index] = coerce_feature(feature, value, f"{where}features.{name}")
    if overrides and cache_mode == "only":
        # A cached prediction was computed from stored features, not from these values.
        raise InvalidRequest(
            "cache 'only' cannot be combined with feature overrides", field=f"{where}features"
        )
    return EntityQuery(entity_id=entity_id, overrides=overrides)


def parse_entity_id(spec: ModelSpec, value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidRequest("entity_id must be a non-empty string", field=field)
    if len(value) > spec.max_id_length:
        raise InvalidRequest(f"entity_id longer than {spec.max_id_length} characters", field=field)
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidRequest(
            "entity_id must not contain whitespace or control characters", field=field
        )
    return value


def coerce_feature(feature: FeatureSpec, value: Any, field: str) -> float:
    """Check one request-supplied value against its declared dtype and bounds."""
    if feature.dtype == "bool":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int) and value in (0, 1):
            return float(value)
        raise InvalidRequest(f"{feature.name} must be true or false", field=field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if feature.dtype == "int" else "a number"
        raise InvalidRequest(f"{feature.name} must be {kind}, got {value!r}", field=field)
    try:
        number = float(value)
    except OverflowError:  # a Python int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise InvalidRequest(f"{feature.name} must be finite", field=field)
    if feature.dtype == "int" and not number.is_integer():
        raise InvalidRequest(f"{feature.name} must be an integer, got {value!r}", field=field)
    if not feature.minimum <= number <= feature.maximum:
        raise InvalidRequest(
            f"{feature.name}={value!r} is outside [{_fmt(feature.minimum)}, "
            f"{_fmt(feature.maximum)}]",
            field=field,
        )
    return number


def _reject_unknown_keys(body: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidRequest(
                f"unknown field {key!r}; allowed: {sorted(allowed)}", field=f"{prefix}{key}"
            )


def _fmt(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


def request_id_or_new(supplied: str | None) -> str:
    """Keep a sane client-supplied request id (header or field), else make one."""
    return supplied if supplied and _REQUEST_ID.match(supplied) else uuid.uuid4().hex
