"""The event format on the input stream, its parsing, and poison classification.

An event is one stream entry with string fields:

``model`` (required)
    the model that scores it (a name in the model spec).
``entity_id`` (required)
    the entity it is about (validated like the REST ``entity_id``).
``features`` (optional)
    a JSON object of feature values the event carries (``{"amount": 42.5}``). They are written
    to the entity's online features (event-time ordered) and override the stored values when
    the event is scored.
``event_time`` (optional)
    when the event happened: Unix seconds or RFC 3339 with an offset. Default: the time Redis
    appended the entry (the millisecond part of its id), so a replay is deterministic.
``event_id`` (optional)
    the producer's id for the event; a producer that retries an append reuses it and the
    output carries it once. Default: the entry id.

Anything else (an unknown field, bad JSON, an unknown model or feature, a value out of bounds)
makes the entry *poison*: it is dead-lettered with the reason and never retried, because
retrying cannot fix it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from gateway.errors import InvalidRequest
from gateway.features import FeatureUpdate
from gateway.spec import ModelSpec
from gateway.validation import parse_entity_id, parse_event_time, parse_feature_update

EVENT_FIELDS = frozenset({"model", "entity_id", "features", "event_time", "event_id"})
MAX_EVENT_ID_LENGTH = 128
MAX_FIELD_BYTES = 64 * 1024
"""A field longer than this is refused before it is decoded (a runaway producer)."""

PoisonKind = Literal["invalid", "attempts", "failed"]
"""``invalid``: the entry cannot be an event; ``attempts``: delivered ``max_attempts`` times
without success (a worker failed or crashed on it each time); ``failed``: scoring rejected it."""


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry as read from the input stream."""

    entry_id: str
    fields: Mapping[bytes, bytes]
    deliveries: int = 1
    """How often the group has delivered it (1 on first read; XAUTOCLAIM adds one each time)."""

    @property
    def appended_at(self) -> float:
        """Unix time Redis appended the entry (the id's millisecond part)."""
        return entry_time_ms(self.entry_id) / 1000.0


@dataclass(frozen=True, slots=True)
class Event:
    entry: StreamEntry
    event_id: str
    explicit_id: bool
    """True when the producer named the event (``event_id``); only then is a dedupe marker set."""
    model: str
    entity_id: str
    event_time: float
    update: FeatureUpdate | None
    """The features the event carries, as a feature-store update (None: it carries none)."""
    overrides: dict[int, float]
    """The same values by feature index of ``model``: they win over stored values."""


@dataclass(frozen=True, slots=True)
class Poison:
    entry: StreamEntry
    reason: str
    kind: PoisonKind
    model: str = ""


def entry_time_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def parse_event(
    entry: StreamEntry,
    specs: Mapping[str, ModelSpec],
    namespace_specs: Mapping[str, Sequence[ModelSpec]],
    *,
    now: float,
) -> Event:
    """Validate one entry; raises InvalidRequest naming the field (the dead-letter reason)."""
    fields = _decode(entry.fields)
    for name in fields:
        if name not in EVENT_FIELDS:
            raise InvalidRequest(
                f"unknown field {name!r}; allowed: {sorted(EVENT_FIELDS)}", field=name
            )
    model = fields.get("model")
    if not model:
        raise InvalidRequest("model is required", field="model")
    spec = specs.get(model)
    if spec is None:
        raise InvalidRequest(f"unknown model {model!r}", field="model")
    entity_id = parse_entity_id(spec, fields.get("entity_id"), "entity_id")

    raw_time = fields.get("event_time")
    event_time = (
        entry.appended_at
        if raw_time is None
        else parse_event_time(_number_or_text(raw_time), "event_time", now=now)
    )

    update: FeatureUpdate | None = None
    overrides: dict[int, float] = {}
    raw_features = fields.get("features")
    if raw_features is not None:
        try:
            features = orjson.loads(raw_features)
        except orjson.JSONDecodeError:
            raise InvalidRequest("features is not valid JSON", field="features") from None
        if not isinstance(features, dict):
            raise InvalidRequest("features must be a JSON object", field="features")
        if features:
            # Checked against every model reading the namespace (the update is shared), with
            # this event's model first: its entity-id rules apply.
            readers = [spec, *(s for s in namespace_specs[spec.entity_namespace] if s is not spec)]
            update = parse_feature_update(
                readers,
                {"entity_id": entity_id, "features": features, "event_time": event_time},
                "",
                now=now,
            )
            by_name = spec.feature_by_name
            overrides = {
                by_name[name].index: value
                for name, value in update.values.items()
                if name in by_name
            }

    raw_id = fields.get("event_id")
    if raw_id is None:
        event_id, explicit = entry.entry_id, False
    else:
        event_id, explicit = _event_id(raw_id), True
    return Event(
        entry=entry,
        event_id=event_id,
        explicit_id=explicit,
        model=model,
        entity_id=entity_id,
        event_time=event_time,
        update=update,
        overrides=overrides,
    )


def classify(
    entries: Sequence[StreamEntry],
    specs: Mapping[str, ModelSpec],
    namespace_specs: Mapping[str, Sequence[ModelSpec]],
    *,
    now: float,
    max_attempts: int,
) -> tuple[list[Event], list[Poison]]:
    """Split entries into events to score and poison to dead-letter."""
    events: list[Event] = []
    poison: list[Poison] = []
    for entry in entries:
        if entry.deliveries > max_attempts:
            poison.append(
                Poison(
                    entry,
                    f"not processed after {entry.deliveries - 1} deliveries (max_attempts="
                    f"{max_attempts}): a worker failed or died on it each time",
                    "attempts",
                    _model_of(entry),
                )
            )
            continue
        try:
            events.append(parse_event(entry, specs, namespace_specs, now=now))
        except InvalidRequest as e:
            poison.append(Poison(entry, reason_of(e), "invalid", _model_of(entry)))
    return events, poison


def reason_of(error: InvalidRequest) -> str:
    return f"{error.field}: {error.detail}" if error.field else error.detail


def encode_event(
    model: str,
    entity_id: str,
    *,
    features: Mapping[str, float | int | bool] | None = None,
    event_time: float | str | None = None,
    event_id: str | None = None,
) -> dict[str, str | bytes]:
    """The stream fields of one event (what a producer passes to XADD)."""
    fields: dict[str, str | bytes] = {"model": model, "entity_id": entity_id}
    if features:
        fields["features"] = orjson.dumps(dict(features))
    if event_time is not None:
        fields["event_time"] = event_time if isinstance(event_time, str) else repr(event_time)
    if event_id is not None:
        fields["event_id"] = event_id
    return fields


def payload_text(fields: Mapping[bytes, bytes]) -> str:
    """The entry's fields as JSON text for the dead-letter record (undecodable bytes replaced)."""
    return orjson.dumps(
        {
            k.decode("utf-8", "replace"): v[:MAX_FIELD_BYTES].decode("utf-8", "replace")
            for k, v in fields.items()
        }
    ).decode()


def _decode(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in raw.items():
        name = key.decode("utf-8", "replace")
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"field longer than {MAX_FIELD_BYTES} bytes", field=name)
        try:
            fields[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("field is not UTF-8 text", field=name) from None
    return fields


def _number_or_text(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value  # an RFC 3339 timestamp, or garbage parse_event_time names
    return number if math.isfinite(number) else value


def _event_id(value: str) -> str:
    if not value or len(value) > MAX_EVENT_ID_LENGTH:
        raise InvalidRequest(
            f"event_id must be 1 to {MAX_EVENT_ID_LENGTH} characters", field="event_id"
        )
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidRequest(
            "event_id must not contain whitespace or control characters", field="event_id"
        )
    return value


def _model_of(entry: StreamEntry) -> str:
    raw = entry.fields.get(b"model", b"")
    return raw[:128].decode("utf-8", "replace")
