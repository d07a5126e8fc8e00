"""gateway.validation: predict bodies checked against the shipped fraud_scorer spec."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import InvalidRequest
from gateway.spec import ModelSpec, load_specs, parse_specs
from gateway.validation import (
    EntityQuery,
    PredictRequest,
    coerce_feature,
    parse_cache_mode,
    parse_entity_id,
    parse_predict_body,
)

SPEC_PATH = Path(__file__).resolve().parents[2] / "config/models.yaml"

# Feature indexes in the shipped spec.
AMOUNT, HOUR, RISK, CARD_PRESENT, IS_ONLINE, TXN_1H = 0, 1, 2, 5, 6, 8


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_specs(SPEC_PATH)["fraud_scorer"]


@pytest.fixture(scope="module")
def small_spec() -> ModelSpec:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    body = raw["models"]["fraud_scorer"]
    body["max_batch_size"] = 3
    body["entity"]["max_id_length"] = 8
    return parse_specs(raw)["fraud_scorer"]


def invalid(spec: ModelSpec, body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_predict_body(spec, body)
    return info.value


# --- shapes ---------------------------------------------------------------------------------


def test_single_minimal(spec: ModelSpec) -> None:
    req = parse_predict_body(spec, {"entity_id": "c1"})
    assert req == PredictRequest(
        items=[EntityQuery(entity_id="c1", overrides={})], cache_mode="prefer", batch=False
    )


def test_single_with_overrides_mapped_to_indexes(spec: ModelSpec) -> None:
    req = parse_predict_body(
        spec,
        {
            "entity_id": "c1",
            "features": {"amount": 12.5, "hour_of_day": 3, "card_present": False},
            "cache": "bypass",
        },
    )
    assert req.batch is False
    assert req.cache_mode == "bypass"
    assert req.items == [
        EntityQuery(entity_id="c1", overrides={AMOUNT: 12.5, HOUR: 3.0, CARD_PRESENT: 0.0})
    ]
    assert all(type(v) is float for v in req.items[0].overrides.values())


def test_batch(spec: ModelSpec) -> None:
    req = parse_predict_body(
        spec,
        {
            "instances": [
                {"entity_id": "a"},
                {"entity_id": 42, "features": {"txn_count_1h": 7}},
                {"entity_id": "c", "features": {}},
            ],
            "cache": "prefer",
        },
    )
    assert req.batch is True
    assert req.cache_mode == "prefer"
    assert req.items == [
        EntityQuery("a", {}),
        EntityQuery("42", {TXN_1H: 7.0}),
        EntityQuery("c", {}),
    ]


def test_single_element_batch_is_still_batch(spec: ModelSpec) -> None:
    req = parse_predict_body(spec, {"instances": [{"entity_id": "a"}]})
    assert req.batch is True
    assert len(req.items) == 1


def test_features_null_means_no_overrides(spec: ModelSpec) -> None:
    assert parse_predict_body(spec, {"entity_id": "a", "features": None}).items[0].overrides == {}


@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_body_must_be_object(spec: ModelSpec, body: Any) -> None:
    assert invalid(spec, body).field == "body"


# --- cache modes ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["prefer", "bypass", "only"])
def test_cache_modes_accepted(spec: ModelSpec, mode: str) -> None:
    assert parse_predict_body(spec, {"entity_id": "a", "cache": mode}).cache_mode == mode
    assert parse_cache_mode(mode) == mode


@pytest.mark.parametrize("mode", ["PREFER", "", None, 1, "refresh"])
def test_cache_mode_rejected(spec: ModelSpec, mode: Any) -> None:
    err = invalid(spec, {"entity_id": "a", "cache": mode})
    assert err.field == "cache"
    err = invalid(spec, {"instances": [{"entity_id": "a"}], "cache": mode})
    assert err.field == "cache"


def test_only_with_overrides_rejected_single(spec: ModelSpec) -> None:
    err = invalid(spec, {"entity_id": "a", "cache": "only", "features": {"amount": 1}})
    assert err.field == "features"
    assert "only" in err.detail


def test_only_with_overrides_rejected_in_batch(spec: ModelSpec) -> None:
    body = {
        "cache": "only",
        "instances": [{"entity_id": "a"}, {"entity_id": "b", "features": {"amount": 1}}],
    }
    assert invalid(spec, body).field == "instances[1].features"


def test_only_without_overrides_ok(spec: ModelSpec) -> None:
    req = parse_predict_body(spec, {"entity_id": "a", "cache": "only", "features": {}})
    assert req.cache_mode == "only"
    assert req.items[0].overrides == {}


# --- unknown keys / features ----------------------------------------------------------------


def test_unknown_top_level_key_single(spec: ModelSpec) -> None:
    err = invalid(spec, {"entity_id": "a", "model": "x"})
    assert err.field == "model"


def test_entity_id_not_allowed_next_to_instances(spec: ModelSpec) -> None:
    err = invalid(spec, {"instances": [{"entity_id": "a"}], "entity_id": "b"})
    assert err.field == "entity_id"


def test_unknown_instance_key(spec: ModelSpec) -> None:
    body = {"instances": [{"entity_id": "a"}, {"entity_id": "b", "cache": "only"}]}
    assert invalid(spec, body).field == "instances[1].cache"


def test_unknown_feature(spec: ModelSpec) -> None:
    err = invalid(spec, {"entity_id": "a", "features": {"amount": 1, "velocity": 2}})
    assert err.field == "features.velocity"
    assert "'velocity'" in err.detail


def test_unknown_feature_in_batch(spec: ModelSpec) -> None:
    body = {"instances": [{"entity_id": "a", "features": {"Amount": 1}}]}
    assert invalid(spec, body).field == "instances[0].features.Amount"


@pytest.mark.parametrize("features", [[1, 2], "amount=1", 5])
def test_features_must_be_object(spec: ModelSpec, features: Any) -> None:
    assert invalid(spec, {"entity_id": "a", "features": features}).field == "features"
    body = {"instances": [{"entity_id": "a"}, {"entity_id": "b", "features": features}]}
    assert invalid(spec, body).field == "instances[1].features"


# --- batch size -----------------------------------------------------------------------------


@pytest.mark.parametrize("instances", [[], {}, "a", None])
def test_instances_must_be_non_empty_list(spec: ModelSpec, instances: Any) -> None:
    assert invalid(spec, {"instances": instances}).field == "instances"


def test_batch_limit_is_spec_max_batch_size(small_spec: ModelSpec) -> None:
    ok = parse_predict_body(small_spec, {"instances": [{"entity_id": str(i)} for i in range(3)]})
    assert len(ok.items) == 3
    err = invalid(small_spec, {"instances": [{"entity_id": str(i)} for i in range(4)]})
    assert err.field == "instances"
    assert err.detail == "batch of 4 exceeds this model's limit of 3"


def test_shipped_batch_limit(spec: ModelSpec) -> None:
    assert len(parse_predict_body(spec, {"instances": [{"entity_id": "a"}] * 256}).items) == 256
    assert invalid(spec, {"instances": [{"entity_id": "a"}] * 257}).field == "instances"


@pytest.mark.parametrize("item", ["a", 1, None, ["entity_id", "a"]])
def test_instance_must_be_object(spec: ModelSpec, item: Any) -> None:
    body = {"instances": [{"entity_id": "ok"}, {"entity_id": "ok2"}, item]}
    assert invalid(spec, body).field == "instances[2]"


# --- entity ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(123, "123"), (0, "0"), (-7, "-7"), ("card-9f.x_Z", "card-9f.x_Z"), ("ünï", "ünï")],
)
def test_entity_id_accepted(spec: ModelSpec, value: Any, expected: str) -> None:
    assert parse_predict_body(spec, {"entity_id": value}).items[0].entity_id == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        True,
        False,
        1.5,
        ["a"],
        {"id": 1},
        "a b",
        " a",
        "a\tb",
        "a\nb",
        "a\x00b",
        "a\x7fb",
        "a\u00a0b",
        "a\u200bb",
    ],
)
def test_entity_id_rejected(spec: ModelSpec, value: Any) -> None:
    assert invalid(spec, {"entity_id": value}).field == "entity_id"
    body = {"instances": [{"entity_id": "a"}, {"entity_id": value}]}
    assert invalid(spec, body).field == "instances[1].entity_id"


def test_entity_id_missing(spec: ModelSpec) -> None:
    assert invalid(spec, {"features": {"amount": 1}}).field == "entity_id"
    assert invalid(spec, {"instances": [{}]}).field == "instances[0].entity_id"


def test_entity_id_length_limit(small_spec: ModelSpec, spec: ModelSpec) -> None:
    assert parse_entity_id(small_spec, "x" * 8, "f") == "x" * 8
    with pytest.raises(InvalidRequest) as info:
        parse_entity_id(small_spec, "x" * 9, "f")
    assert info.value.field == "f"
    assert "8" in info.value.detail
    # int ids are length-checked after conversion
    with pytest.raises(InvalidRequest):
        parse_entity_id(small_spec, 123456789, "f")
    assert parse_entity_id(spec, "x" * 128, "f") == "x" * 128
    assert invalid(spec, {"entity_id": "x" * 129}).field == "entity_id"


# --- feature coercion -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(True, 1.0), (False, 0.0), (1, 1.0), (0, 0.0)])
def test_bool_coercion(spec: ModelSpec, value: Any, expected: float) -> None:
    req = parse_predict_body(spec, {"entity_id": "a", "features": {"is_online": value}})
    assert req.items[0].overrides == {IS_ONLINE: expected}


@pytest.mark.parametrize("value", [2, -1, 1.0, 0.5, "true", "1", None])
def test_bool_rejected(spec: ModelSpec, value: Any) -> None:
    err = invalid(spec, {"entity_id": "a", "features": {"is_online": value}})
    assert err.field == "features.is_online"


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (23, 23.0), (5.0, 5.0)])
def test_int_accepted(spec: ModelSpec, value: Any, expected: float) -> None:
    req = parse_predict_body(spec, {"entity_id": "a", "features": {"hour_of_day": value}})
    assert req.items[0].overrides == {HOUR: expected}


@pytest.mark.parametrize("value", [5.5, "5", True, None, 24, -1, 1e300])
def test_int_rejected(spec: ModelSpec, value: Any) -> None:
    err = invalid(spec, {"entity_id": "a", "features": {"hour_of_day": value}})
    assert err.field == "features.hour_of_day"


def test_int_rejection_messages(spec: ModelSpec) -> None:
    f = spec.feature_by_name["hour_of_day"]
    with pytest.raises(InvalidRequest, match=r"must be an integer, got 5\.5"):
        coerce_feature(f, 5.5, "x")
    with pytest.raises(InvalidRequest, match=r"hour_of_day=24 is outside \[0, 23\]"):
        coerce_feature(f, 24, "x")
    with pytest.raises(InvalidRequest, match="must be an integer, got '5'"):
        coerce_feature(f, "5", "x")


@pytest.mark.parametrize(("value", "expected"), [(0, 0.0), (0.0, 0.0), (1_000_000, 1e6), (3, 3.0)])
def test_float_bounds_inclusive(spec: ModelSpec, value: Any, expected: float) -> None:
    req = parse_predict_body(spec, {"entity_id": "a", "features": {"amount": value}})
    assert req.items[0].overrides == {AMOUNT: expected}


@pytest.mark.parametrize(
    "value", [-0.01, 1_000_000.5, math.nan, math.inf, -math.inf, "12.5", False, [1], None]
)
def test_float_rejected(spec: ModelSpec, value: Any) -> None:
    err = invalid(spec, {"entity_id": "a", "features": {"amount": value}})
    assert err.field == "features.amount"


def test_non_finite_message(spec: ModelSpec) -> None:
    with pytest.raises(InvalidRequest, match="amount must be finite"):
        coerce_feature(spec.feature_by_name["amount"], math.nan, "features.amount")


def test_float_bound_message_keeps_fraction(spec: ModelSpec) -> None:
    with pytest.raises(InvalidRequest, match=r"merchant_category_risk=1.5 is outside \[0, 1\]"):
        coerce_feature(spec.feature_by_name["merchant_category_risk"], 1.5, "f")


def test_batch_error_field_names_the_instance(spec: ModelSpec) -> None:
    body = {
        "instances": [
            {"entity_id": "a", "features": {"amount": 1}},
            {"entity_id": "b", "features": {"amount": 2}},
            {"entity_id": "c", "features": {"amount": -1}},
        ]
    }
    err = invalid(spec, body)
    assert err.field == "instances[2].features.amount"
    assert err.problem()["field"] == "instances[2].features.amount"
    assert err.problem()["status"] == 422


def test_first_bad_instance_reported(spec: ModelSpec) -> None:
    body = {
        "instances": [
            {"entity_id": "a"},
            {"entity_id": "b", "features": {"hour_of_day": 99}},
            {"entity_id": "c", "features": {"amount": -1}},
        ]
    }
    assert invalid(spec, body).field == "instances[1].features.hour_of_day"


def test_integer_beyond_float_range_is_invalid_not_a_crash() -> None:
    feature = load_specs(SPEC_PATH)["fraud_scorer"].feature_by_name["amount"]
    with pytest.raises(InvalidRequest) as raised:
        coerce_feature(feature, 10**400, "features.amount")
    assert raised.value.field == "features.amount"
