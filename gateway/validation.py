"""Request validation against a model's declared feature schema.

Transport-neutral: REST hands in the decoded JSON body, gRPC hands in the same shapes built
from its messages. Every rejection is an ``InvalidRequest`` naming the offending field with
a JSON-path-like name (``instances[3].features.amount``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from gateway.errors import InvalidRequest
from gateway.features import FeatureUpdate
from gateway.spec import FeatureSpec, ModelSpec

CacheMode = Literal["prefer", "bypass", "only"]
CACHE_MODES: tuple[CacheMode, ...] = ("prefer", "bypass", "only")

_WHITESPACE = re.compile(r"\s")  # str.isspace()'s set, searched in C
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
    if not value.isprintable() or _WHITESPACE.search(value):
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


MAX_TIMEOUT_MS = 60_000
TIMEOUT_HEADER = "X-Request-Timeout-Ms"


def request_budget(spec: ModelSpec, supplied_s: float | None) -> float | None:
    """The request's time budget: the caller's own, else the model's default deadline.

    (Each Triton call stays capped by ``GATEWAY_TRITON__TIMEOUT_S`` either way.)
    """
    return spec.deadline_s if supplied_s is None else supplied_s


def parse_timeout_header(value: str | None) -> float | None:
    """``X-Request-Timeout-Ms``: whole milliseconds, 1 to 60000."""
    if value is None:
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_TIMEOUT_MS:
        raise InvalidRequest(
            f"{TIMEOUT_HEADER} must be whole milliseconds between 1 and {MAX_TIMEOUT_MS}",
            field=TIMEOUT_HEADER,
        )
    return int(value) / 1000


MAX_CLOCK_SKEW_S = 300.0
"""How far in the future an event time may be: beyond it a clock is wrong, and accepting
it would pin the entity's features (older-than-stored updates are dropped)."""
_UPDATE_KEYS = frozenset({"entity_id", "features", "event_time"})


def parse_event_time(value: Any, field: str, *, now: float) -> float:
    """Unix seconds (number) or an RFC 3339 timestamp with a UTC offset."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(
                f"event_time {value!r} is not an RFC 3339 timestamp", field=field
            ) from None
        if parsed.tzinfo is None:
            raise InvalidRequest("event_time needs a UTC offset (e.g. 'Z')", field=field)
        seconds = parsed.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidRequest(
            "event_time must be Unix seconds or an RFC 3339 timestamp", field=field
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest("event_time must be a positive, finite time", field=field)
    if seconds > now + MAX_CLOCK_SKEW_S:
        raise InvalidRequest(
            f"event_time is more than {MAX_CLOCK_SKEW_S:.0f}s in the future", field=field
        )
    return seconds


def parse_feature_update(
    specs: Sequence[ModelSpec], raw: Any, where: str, *, now: float
) -> FeatureUpdate:
    """One entity's pushed features, checked against every model that reads them.

    ``specs`` are the models sharing the entity namespace; a feature must be declared by at
    least one of them and satisfy the dtype and bounds of each that declares it.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest("each update must be a JSON object", field=where.rstrip(".") or "body")
    _reject_unknown_keys(raw, _UPDATE_KEYS, prefix=where)
    entity_id = parse_entity_id(specs[0], raw.get("entity_id"), f"{where}entity_id")
    features = raw.get("features")
    if not isinstance(features, dict) or not features:
        raise InvalidRequest("features must be a non-empty JSON object", field=f"{where}features")
    values: dict[str, float] = {}
    for name, value in features.items():
        field = f"{where}features.{name}"
        declared = [s.feature_by_name[name] for s in specs if name in s.feature_by_name]
        if not declared:
            raise InvalidRequest(f"unknown feature {name!r}", field=field)
        for feature in declared:
            values[name] = coerce_feature(feature, value, field)
    event_time = raw.get("event_time")
    return FeatureUpdate(
        entity_id=entity_id,
        values=values,
        event_time=now
        if event_time is None
        else parse_event_time(event_time, f"{where}event_time", now=now),
    )


def parse_feature_push(
    specs: Sequence[ModelSpec], body: Any, *, now: float, max_entities: int
) -> list[FeatureUpdate]:
    """A bulk push body: ``{"updates": [{entity_id, features, event_time?}, ...]}``."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", field="body")
    _reject_unknown_keys(body, frozenset({"updates"}), prefix="")
    updates = body.get("updates")
    if not isinstance(updates, list) or not updates:
        raise InvalidRequest("updates must be a non-empty list", field="updates")
    if len(updates) > max_entities:
        raise InvalidRequest(
            f"{len(updates)} updates exceed the limit of {max_entities} per request",
            field="updates",
        )
    parsed = [
        parse_feature_update(specs, raw, f"updates[{i}].", now=now) for i, raw in enumerate(updates)
    ]
    # Two updates of one entity in one request have no defined order: refuse rather than guess.
    first: dict[str, int] = {}
    for i, update in enumerate(parsed):
        earlier = first.setdefault(update.entity_id, i)
        if earlier != i:
            raise InvalidRequest(
                f"entity {update.entity_id!r} also appears at updates[{earlier}]",
                field=f"updates[{i}].entity_id",
            )
    return parsed


def _reject_unknown_keys(body: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in body:
        if key not in allowed:
            # An empty key is named '""', so the problem body's field is never empty.
            raise InvalidRequest(
                f"unknown field {key!r}; allowed: {sorted(allowed)}",
                field=prefix + (key or '""'),
            )


def _fmt(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


def request_id_or_new(supplied: str | None) -> str:
    """Keep a sane client-supplied request id (header or field), else make one."""
    if supplied and _REQUEST_ID.match(supplied):
        return supplied
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


# Request ids only correlate log lines and traces; they are not secrets. A random per-process
# prefix and a counter are unique enough (2**64 prefixes) and cost no getrandom() syscall per
# request, unlike uuid4. Regenerated in a forked child so siblings never share a prefix.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = uuid.uuid4().hex[:16], itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)
