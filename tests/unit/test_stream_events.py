"""Event parsing and poison classification for the stream lane."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from gateway.spec import ModelSpec, load_specs
from gateway.stream.events import (
    MAX_FIELD_BYTES,
    StreamEntry,
    classify,
    encode_event,
    entry_time_ms,
    parse_event,
    payload_text,
)
from gateway.stream.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
SPECS = load_specs(ROOT / "config/models.yaml")
SPEC = SPECS["fraud_scorer"]
NAMESPACES: dict[str, list[ModelSpec]] = {SPEC.entity_namespace: [SPEC]}
NOW = 1_780_000_000.0
ENTRY_ID = "1780000000123-4"


def entry(fields: dict[str, str | bytes], *, entry_id: str = ENTRY_ID, deliveries: int = 1):
    raw = {k.encode(): (v if isinstance(v, bytes) else v.encode()) for k, v in fields.items()}
    return StreamEntry(entry_id, raw, deliveries)


def parse(fields: dict[str, str | bytes]):
    return parse_event(entry(fields), SPECS, NAMESPACES, now=NOW)


def poison_reason(fields: dict[str, str | bytes]) -> str:
    events, poison = classify([entry(fields)], SPECS, NAMESPACES, now=NOW, max_attempts=3)
    assert not events
    (item,) = poison
    assert item.kind == "invalid"
    return item.reason


def test_event_with_features_becomes_an_update_and_overrides() -> None:
    event = parse(
        {
            "model": "fraud_scorer",
            "entity_id": "card-1",
            "features": '{"amount": 912.5, "is_online": true}',
            "event_time": "1779999999.5",
        }
    )
    assert event.model == "fraud_scorer"
    assert event.entity_id == "card-1"
    assert event.event_time == 1779999999.5
    assert event.update is not None
    assert dict(event.update.values) == {"amount": 912.5, "is_online": 1.0}
    assert event.update.event_time == event.event_time
    by_name = SPEC.feature_by_name
    assert event.overrides == {by_name["amount"].index: 912.5, by_name["is_online"].index: 1.0}


def test_defaults_event_time_is_the_entry_append_time_and_event_id_the_entry_id() -> None:
    event = parse({"model": "fraud_scorer", "entity_id": "card-1"})
    assert event.event_time == 1780000000.123
    assert event.event_id == ENTRY_ID
    assert event.explicit_id is False
    assert event.update is None
    assert event.overrides == {}


def test_explicit_event_id_and_rfc3339_time() -> None:
    event = parse(
        {
            "model": "fraud_scorer",
            "entity_id": "card-1",
            "event_id": "txn-000042",
            "event_time": "2026-05-28T20:26:40Z",
        }
    )
    assert event.event_id == "txn-000042"
    assert event.explicit_id is True
    assert math.isclose(event.event_time, 1780000000.0)


def test_empty_features_object_carries_nothing() -> None:
    event = parse({"model": "fraud_scorer", "entity_id": "c", "features": "{}"})
    assert event.update is None


def test_encode_event_round_trips() -> None:
    fields = encode_event(
        "fraud_scorer",
        "card-9",
        features={"amount": 10.25, "card_present": False},
        event_time=1779999000.25,
        event_id="e-1",
    )
    event = parse(fields)
    assert event.update is not None
    assert dict(event.update.values) == {"amount": 10.25, "card_present": 0.0}
    assert event.event_time == 1779999000.25
    assert event.event_id == "e-1"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"entity_id": "c"}, "model: model is required"),
        ({"model": "nope", "entity_id": "c"}, "model: unknown model 'nope'"),
        ({"model": "fraud_scorer"}, "entity_id: entity_id must be a non-empty string"),
        ({"model": "fraud_scorer", "entity_id": "a b"}, "entity_id: entity_id must not contain"),
        ({"model": "fraud_scorer", "entity_id": "c", "colour": "red"}, "colour: unknown field"),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": "{bad"},
            "features: features is not valid JSON",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": "[1]"},
            "features: features must be a JSON object",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": '{"amount": -5}'},
            "features.amount: amount=-5 is outside [0, 1000000]",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": '{"velocity": 1}'},
            "features.velocity: unknown feature 'velocity'",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": '{"is_online": "yes"}'},
            "features.is_online: is_online must be true or false",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "event_time": "yesterday"},
            "event_time: event_time 'yesterday' is not an RFC 3339 timestamp",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "event_time": str(NOW + 3600)},
            "event_time: event_time is more than 300s in the future",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "event_id": "a b"},
            "event_id: event_id must not",
        ),
        (
            {"model": "fraud_scorer", "entity_id": "c", "event_id": "x" * 200},
            "event_id: event_id must be",
        ),
        ({"model": "fraud_scorer", "entity_id": b"\xff\xfe"}, "entity_id: field is not UTF-8 text"),
        (
            {"model": "fraud_scorer", "entity_id": "c", "features": "x" * (MAX_FIELD_BYTES + 1)},
            "features: field longer than",
        ),
    ],
)
def test_poison_is_classified_with_a_reason_naming_the_field(
    fields: dict[str, str | bytes], reason: str
) -> None:
    assert poison_reason(fields).startswith(reason)


def test_entries_delivered_too_often_are_poison_without_parsing() -> None:
    good = {"model": "fraud_scorer", "entity_id": "c"}
    fresh, tired = entry(good, deliveries=3), entry(good, entry_id="1-1", deliveries=4)
    events, poison = classify([fresh, tired], SPECS, NAMESPACES, now=NOW, max_attempts=3)
    assert [e.entry.entry_id for e in events] == [ENTRY_ID]
    (item,) = poison
    assert item.kind == "attempts"
    assert item.model == "fraud_scorer"
    assert "after 3 deliveries (max_attempts=3)" in item.reason


def test_payload_text_keeps_undecodable_bytes_readable() -> None:
    text = payload_text({b"model": b"m", b"entity_id": b"\xff"})
    assert orjson.loads(text) == {"model": "m", "entity_id": "\ufffd"}


def test_entry_time_is_the_millisecond_part_of_the_id() -> None:
    assert entry_time_ms("1780000000123-7") == 1780000000123


def test_settings_refuse_a_window_smaller_than_a_batch() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        StreamSettings(batch_max_size=512, max_in_flight=256)
