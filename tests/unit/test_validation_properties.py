"""Property-based tests (hypothesis) of the request validators and the spec's feature bounds.

* any JSON-like body either parses into a valid request or raises InvalidRequest naming a
  field, never another exception;
* values within a feature's declared dtype and bounds round-trip exactly;
* values outside them are rejected, naming the feature;
* a spec's feature declaration either fails with SpecError or yields bounds that contain the
  default, and ``as_dict`` describes it faithfully.

"JSON-like" is what orjson can hand the validator: integers within 64 bits (larger ones
arrive as floats), finite or non-finite floats (gRPC carries doubles), any text.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest, SpecError
from gateway.spec import FeatureSpec, ModelSpec, load_specs, parse_specs
from gateway.validation import CACHE_MODES, coerce_feature, parse_feature_push, parse_predict_body

T = TypeVar("T")
SPEC_PATH = Path(__file__).resolve().parents[2] / "config/models.yaml"
SPEC: ModelSpec = load_specs(SPEC_PATH)["fraud_scorer"]
FEATURES = list(SPEC.features)
NAMES = [f.name for f in FEATURES]

# Per test, not a global profile: other modules keep hypothesis' defaults.
PROPERTY = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(PROPERTY, max_examples=30)

# --- JSON-like values ------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
keys = st.one_of(
    st.sampled_from(["entity_id", "features", "cache", "instances", *NAMES]), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)
# Bodies shaped like predict requests, with arbitrary values in every slot.
near_miss_instance = st.fixed_dictionaries(
    {"entity_id": json_values},
    optional={
        "features": st.one_of(json_values, st.dictionaries(st.sampled_from(NAMES), json_values)),
        "cache": json_values,
        "extra": json_values,
    },
)
near_miss_bodies = st.one_of(
    json_values,
    near_miss_instance,
    st.fixed_dictionaries(
        {"instances": st.one_of(json_values, st.lists(near_miss_instance, max_size=4))},
        optional={"cache": json_values},
    ),
)


def outcome(parse: Callable[[], T]) -> tuple[T | None, InvalidRequest | None]:
    """The parse result, or the InvalidRequest it raised; any other exception propagates."""
    try:
        return parse(), None
    except InvalidRequest as e:
        return None, e


@PROPERTY
@given(near_miss_bodies)
def test_any_json_body_parses_or_is_rejected_naming_a_field(body: Any) -> None:
    request, error = outcome(lambda: parse_predict_body(SPEC, body))
    if error is not None:
        assert error.field, f"InvalidRequest without a field: {error.detail}"
        assert error.http_status == 422
        return
    assert request is not None
    assert request.cache_mode in CACHE_MODES
    assert 1 <= len(request.items) <= SPEC.max_batch_size
    for item in request.items:
        assert item.entity_id
        assert len(item.entity_id) <= SPEC.max_id_length
        for index, value in item.overrides.items():
            feature = FEATURES[index]
            assert type(value) is float
            assert feature.minimum <= value <= feature.maximum


@PROPERTY
@given(json_values)
def test_any_json_feature_push_parses_or_is_rejected_naming_a_field(body: Any) -> None:
    _, error = outcome(lambda: parse_feature_push([SPEC], body, now=1.7e9, max_entities=10))
    assert error is None or error.field


# --- valid requests round-trip ---------------------------------------------------------------

entity_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=SPEC.max_id_length,
).filter(lambda s: s.isprintable() and not any(c.isspace() for c in s))


def value_within(feature: FeatureSpec) -> st.SearchStrategy[Any]:
    if feature.dtype == "bool":
        return st.one_of(st.booleans(), st.sampled_from([0, 1]))
    low = feature.minimum if math.isfinite(feature.minimum) else -1e12
    high = feature.maximum if math.isfinite(feature.maximum) else 1e12
    if feature.dtype == "int":
        ints = st.integers(min_value=math.ceil(low), max_value=math.floor(high))
        return st.one_of(ints, ints.map(float))  # 3.0 is an integer too
    return st.one_of(
        st.floats(min_value=low, max_value=high, allow_nan=False),
        st.integers(min_value=math.ceil(low), max_value=math.floor(high)),
    )


feature_overrides = st.dictionaries(
    st.sampled_from(FEATURES), st.none(), max_size=len(FEATURES)
).flatmap(lambda chosen: st.fixed_dictionaries({f.name: value_within(f) for f in chosen}))


@PROPERTY
@given(entity_ids, feature_overrides, st.sampled_from(["prefer", "bypass"]))
def test_values_within_bounds_round_trip(entity_id: str, features: dict, cache: str) -> None:
    request = parse_predict_body(
        SPEC, {"entity_id": entity_id, "features": features, "cache": cache}
    )

    (item,) = request.items
    assert item.entity_id == entity_id
    assert request.cache_mode == cache
    assert not request.batch
    assert item.overrides == {
        SPEC.feature_by_name[name].index: float(value) for name, value in features.items()
    }


@FEWER
@given(st.lists(st.tuples(entity_ids, feature_overrides), min_size=1, max_size=8))
def test_batches_keep_order_and_values(instances: list[tuple[str, dict]]) -> None:
    body = {"instances": [{"entity_id": e, "features": f} for e, f in instances]}
    request = parse_predict_body(SPEC, body)

    assert request.batch
    assert [i.entity_id for i in request.items] == [e for e, _ in instances]
    for item, (_, features) in zip(request.items, instances, strict=True):
        assert item.overrides == {
            SPEC.feature_by_name[n].index: float(v) for n, v in features.items()
        }


# --- out of bounds is rejected ---------------------------------------------------------------

bounded = [f for f in FEATURES if f.dtype != "bool"]


@PROPERTY
@given(st.data())
def test_values_outside_bounds_are_rejected_naming_the_feature(data: st.DataObject) -> None:
    feature = data.draw(st.sampled_from(bounded))
    below = st.floats(max_value=feature.minimum, exclude_max=True, allow_nan=False)
    above = st.floats(min_value=feature.maximum, exclude_min=True, allow_nan=False)
    value = data.draw(st.one_of(below, above))

    with pytest.raises(InvalidRequest) as info:
        parse_predict_body(SPEC, {"entity_id": "c1", "features": {feature.name: value}})
    assert info.value.field == f"features.{feature.name}"


@PROPERTY
@given(
    st.sampled_from([f for f in FEATURES if f.dtype == "int"]),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not v.is_integer()),
)
def test_int_features_reject_fractions(feature: FeatureSpec, value: float) -> None:
    with pytest.raises(InvalidRequest):
        coerce_feature(feature, value, f"features.{feature.name}")


@PROPERTY
@given(st.sampled_from(FEATURES), st.one_of(st.text(), st.none(), st.lists(st.integers())))
def test_non_numbers_are_rejected(feature: FeatureSpec, value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        coerce_feature(feature, value, "f")
    assert info.value.field == "f"


# --- spec feature bounds ---------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6), st.floats(allow_nan=False, width=32)
)
feature_declarations = st.fixed_dictionaries(
    {"name": st.just("x"), "dtype": st.sampled_from(["float", "int", "bool"])},
    optional={"min": numbers, "max": numbers, "default": st.one_of(numbers, st.booleans())},
)
RAW_SPEC = yaml.safe_load(SPEC_PATH.read_text())


@PROPERTY
@given(feature_declarations)
def test_declared_bounds_contain_the_default_or_the_spec_is_refused(declared: dict) -> None:
    raw = copy.deepcopy(RAW_SPEC)
    raw["models"]["fraud_scorer"]["features"] = [declared]
    try:
        (feature,) = parse_specs(raw)["fraud_scorer"].features
    except SpecError as e:
        error: SpecError | None = e
    else:
        error = None
    if error is not None:
        assert "models.fraud_scorer.features[0]" in str(error)
        return
    assert feature.minimum <= feature.maximum
    if feature.default is not None:
        assert feature.minimum <= feature.default <= feature.maximum
        if feature.dtype == "int":
            assert feature.default.is_integer()
    described = feature.as_dict()
    assert described["required"] is (feature.default is None)
    assert described.get("min", -math.inf) == feature.minimum
    assert described.get("max", math.inf) == feature.maximum
    # every value inside the declared bounds is accepted, the bounds themselves included
    if feature.dtype == "bool":
        assert (coerce_feature(feature, False, "f"), coerce_feature(feature, True, "f")) == (0, 1)
        return
    for edge in (feature.minimum, feature.maximum):
        if math.isfinite(edge) and (feature.dtype != "int" or edge.is_integer()):
            assert coerce_feature(feature, edge, "f") == edge
