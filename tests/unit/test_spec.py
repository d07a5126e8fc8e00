"""gateway.spec: loading the shipped spec, consistency checks, and the Triton cross-check."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import SpecError
from gateway.spec import (
    ModelSpec,
    check_against_triton,
    load_specs,
    parse_specs,
    resolve_version,
)
from training.fraud_data import FEATURE_NAMES

SPEC_PATH = Path(__file__).resolve().parents[2] / "config/models.yaml"

# The spec's column order is the training order: one list, owned by the training code.
EXPECTED_ORDER = list(FEATURE_NAMES)


def raw_spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def model_body(raw: dict[str, Any]) -> dict[str, Any]:
    return raw["models"]["fraud_scorer"]


def feature(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in model_body(raw)["features"] if f["name"] == name)


def parse_error(raw: Any) -> str:
    with pytest.raises(SpecError) as info:
        parse_specs(raw)
    return str(info.value)


@pytest.fixture
def spec() -> ModelSpec:
    return load_specs(SPEC_PATH)["fraud_scorer"]


# --- the shipped spec -------------------------------------------------------------------


def test_shipped_spec_loads(spec: ModelSpec) -> None:
    assert list(load_specs(SPEC_PATH)) == ["fraud_scorer"]
    assert spec.triton_name == "fraud_scorer"
    assert spec.triton_version == "1"
    assert spec.input_name == "features"
    assert spec.input_dtype == "FP32"
    assert spec.entity_key == "card_id"
    assert spec.entity_namespace == "card"
    assert spec.max_id_length == 128
    assert spec.max_batch_size == 256
    assert spec.cache_ttl_s == 86400
    assert spec.policy.max_age_s == 3600.0
    assert spec.policy.stale_while_revalidate_s == 300.0
    assert spec.policy.max_staleness_s == 21600.0
    assert spec.policy.default_scores == (0.013,)
    assert spec.policy.without_feature_store == "fail"
    assert spec.policy.max_feature_age_s == 604800.0
    assert spec.policy.on_old_features == "flag"
    assert [(o.name, o.dtype) for o in spec.outputs] == [("fraud_probability", "FP32")]


def test_shipped_spec_features_order_and_indexes(spec: ModelSpec) -> None:
    assert len(spec.features) == 14
    assert [f.name for f in spec.features] == EXPECTED_ORDER
    assert [f.index for f in spec.features] == list(range(14))
    assert all(spec.feature_by_name[f.name] is f for f in spec.features)


def test_shipped_spec_defaults_and_bounds(spec: ModelSpec) -> None:
    by = spec.feature_by_name
    amount = by["amount"]
    assert (amount.dtype, amount.minimum, amount.maximum, amount.default) == (
        "float",
        0.0,
        1_000_000.0,
        None,
    )
    assert (by["hour_of_day"].dtype, by["hour_of_day"].maximum, by["hour_of_day"].default) == (
        "int",
        23.0,
        12.0,
    )
    assert by["merchant_category_risk"].default == pytest.approx(0.1)
    assert by["distance_from_home_km"].maximum == 20040.0
    assert by["card_present"].default == 1.0
    assert by["is_online"].default == 0.0
    assert (by["card_present"].minimum, by["card_present"].maximum) == (0.0, 1.0)
    assert by["account_age_days"].default == 365.0
    # amount is the only required feature
    assert [f.name for f in spec.features if f.default is None] == ["amount"]


def test_as_dict_marks_required_and_omits_infinite_bounds() -> None:
    raw = raw_spec()
    model_body(raw)["features"].append({"name": "free", "dtype": "float", "default": -3})
    spec = parse_specs(raw)["fraud_scorer"]
    d = spec.as_dict()
    assert d["features"][0] == {
        "name": "amount",
        "dtype": "float",
        "min": 0.0,
        "max": 1_000_000.0,
        "default": None,
        "required": True,
    }
    assert d["features"][-1] == {
        "name": "free",
        "dtype": "float",
        "default": -3.0,
        "required": False,
    }
    assert spec.feature_by_name["free"].minimum == -math.inf


def test_defaults_when_optional_keys_absent() -> None:
    raw = raw_spec()
    body = model_body(raw)
    del body["triton"]["version"], body["triton"]["datatype"], body["triton"]["name"]
    del body["max_batch_size"], body["entity"]["max_id_length"], body["description"]
    spec = parse_specs(raw)["fraud_scorer"]
    assert spec.triton_version == "latest"
    assert spec.input_dtype == "FP32"
    assert spec.triton_name == "fraud_scorer"
    assert spec.max_batch_size == 64
    assert spec.max_id_length == 128
    assert spec.description == ""


def test_integer_version_is_accepted_as_string() -> None:
    raw = raw_spec()
    model_body(raw)["triton"]["version"] = 3
    assert parse_specs(raw)["fraud_scorer"].triton_version == "3"


def test_load_specs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read model spec"):
        load_specs(tmp_path / "nope.yaml")


def test_load_specs_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_specs(path)


# --- parse_specs rejections ---------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], {"models": {}}, {"models": []}, {"other": 1}])
def test_top_level_must_have_models(raw: Any) -> None:
    assert "'models'" in parse_error(raw)


def test_unknown_top_level_key() -> None:
    raw = raw_spec()
    raw["extra"] = 1
    msg = parse_error(raw)
    assert msg.startswith("spec:")
    assert "'extra'" in msg


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ((), "models.fraud_scorer"),
        (("triton",), "models.fraud_scorer.triton"),
        (("entity",), "models.fraud_scorer.entity"),
        (("cache",), "models.fraud_scorer.cache"),
        (("features", 3), "models.fraud_scorer.features[3]"),
        (("outputs", 0), "models.fraud_scorer.outputs[0]"),
    ],
)
def test_unknown_keys_rejected_at_every_level(path: tuple[Any, ...], where: str) -> None:
    raw = raw_spec()
    target: Any = model_body(raw)
    for part in path:
        target = target[part]
    target["bogus_key"] = 1
    msg = parse_error(raw)
    assert msg.startswith(f"{where}: unknown key(s) ['bogus_key']")


@pytest.mark.parametrize("section", ["triton", "entity", "cache"])
def test_section_must_be_mapping(section: str) -> None:
    raw = raw_spec()
    model_body(raw)[section] = ["not", "a", "mapping"]
    assert parse_error(raw) == f"models.fraud_scorer.{section}: must be a mapping"


def test_invalid_model_name() -> None:
    raw = raw_spec()
    raw["models"]["bad name!"] = raw["models"].pop("fraud_scorer")
    assert "invalid model name 'bad name!'" in parse_error(raw)


def test_bad_feature_dtype() -> None:
    raw = raw_spec()
    feature(raw, "amount")["dtype"] = "double"
    msg = parse_error(raw)
    assert msg.startswith("models.fraud_scorer.features[0].dtype:")
    assert "'double'" in msg


def test_bad_input_datatype() -> None:
    raw = raw_spec()
    model_body(raw)["triton"]["datatype"] = "INT64"
    assert parse_error(raw).startswith("models.fraud_scorer.triton.datatype:")


def test_bad_output_dtype() -> None:
    raw = raw_spec()
    model_body(raw)["outputs"][0]["dtype"] = "BOOL"
    assert parse_error(raw).startswith("models.fraud_scorer.outputs[0].dtype:")


def test_min_greater_than_max() -> None:
    raw = raw_spec()
    f = feature(raw, "hour_of_day")
    f["min"], f["max"] = 24, 23
    assert parse_error(raw) == "models.fraud_scorer.features[1]: min 24.0 is greater than max 23.0"


def test_non_numeric_bound() -> None:
    raw = raw_spec()
    feature(raw, "amount")["max"] = "lots"
    assert parse_error(raw).startswith("models.fraud_scorer.features[0].max: must be a number")


def test_bool_feature_rejects_bounds() -> None:
    raw = raw_spec()
    feature(raw, "card_present")["max"] = 1
    assert parse_error(raw) == "models.fraud_scorer.features[5]: bool features take no min/max"


@pytest.mark.parametrize(("name", "value"), [("hour_of_day", 24), ("hour_of_day", -1)])
def test_default_outside_bounds(name: str, value: float) -> None:
    raw = raw_spec()
    feature(raw, name)["default"] = value
    msg = parse_error(raw)
    assert msg.startswith("models.fraud_scorer.features[1].default:")
    assert "outside [0.0, 23.0]" in msg


def test_non_finite_default_rejected() -> None:
    raw = raw_spec()
    feature(raw, "avg_amount_30d")["default"] = math.inf
    del feature(raw, "avg_amount_30d")["max"]
    assert parse_error(raw).startswith("models.fraud_scorer.features[10].default:")


def test_non_integer_default_for_int() -> None:
    raw = raw_spec()
    feature(raw, "hour_of_day")["default"] = 12.5
    assert parse_error(raw) == "models.fraud_scorer.features[1].default: 12.5 is not an integer"


def test_integral_float_default_for_int_is_fine() -> None:
    raw = raw_spec()
    feature(raw, "hour_of_day")["default"] = 7.0
    assert parse_specs(raw)["fraud_scorer"].feature_by_name["hour_of_day"].default == 7.0


@pytest.mark.parametrize("value", [1, 0, "true", "yes"])
def test_non_bool_default_for_bool(value: Any) -> None:
    raw = raw_spec()
    feature(raw, "is_online")["default"] = value
    assert parse_error(raw) == "models.fraud_scorer.features[6].default: must be true or false"


@pytest.mark.parametrize("value", [True, "12"])
def test_non_number_default_for_numeric(value: Any) -> None:
    raw = raw_spec()
    feature(raw, "hour_of_day")["default"] = value
    assert parse_error(raw).startswith("models.fraud_scorer.features[1].default: must be a number")


def test_duplicate_feature_names() -> None:
    raw = raw_spec()
    model_body(raw)["features"].append({"name": "amount", "dtype": "float", "default": 1})
    assert parse_error(raw) == "models.fraud_scorer.features: duplicate name 'amount'"


def test_duplicate_output_names() -> None:
    raw = raw_spec()
    model_body(raw)["outputs"].append({"name": "fraud_probability", "dtype": "FP32"})
    assert parse_error(raw) == "models.fraud_scorer.outputs: duplicate name 'fraud_probability'"


def test_reserved_underscore_name() -> None:
    raw = raw_spec()
    feature(raw, "amount")["name"] = "_amount"
    assert parse_error(raw) == (
        "models.fraud_scorer.features[0].name: names starting with '_' are reserved"
    )


@pytest.mark.parametrize("name", ["1abc", "has space", "", None, "x" * 65])
def test_invalid_feature_name(name: Any) -> None:
    raw = raw_spec()
    feature(raw, "amount")["name"] = name
    assert parse_error(raw).startswith("models.fraud_scorer.features[0].name: missing or invalid")


def test_staleness_above_ttl() -> None:
    raw = raw_spec()
    model_body(raw)["cache"]["max_staleness_s"] = 86401
    assert parse_error(raw).startswith(
        "models.fraud_scorer.cache.max_staleness_s: must be between max_age_s"
    )


def test_staleness_below_max_age() -> None:
    raw = raw_spec()
    model_body(raw)["cache"]["max_staleness_s"] = 60
    assert "must be between max_age_s (3600.0)" in parse_error(raw)


def test_staleness_equal_to_ttl_is_fine() -> None:
    raw = raw_spec()
    model_body(raw)["cache"]["max_staleness_s"] = 86400
    assert parse_specs(raw)["fraud_scorer"].policy.max_staleness_s == 86400.0


def test_max_staleness_defaults_to_max_age() -> None:
    # No stale fallback unless asked for.
    raw = raw_spec()
    del model_body(raw)["cache"]["max_staleness_s"]
    assert parse_specs(raw)["fraud_scorer"].policy.max_staleness_s == 3600.0


def test_max_age_is_required_with_a_pointer_to_the_old_meaning() -> None:
    raw = raw_spec()
    del model_body(raw)["cache"]["max_age_s"]
    assert "cache.max_age_s: required" in parse_error(raw)


def test_revalidate_window_must_fit_in_ttl() -> None:
    raw = raw_spec()
    model_body(raw)["cache"]["stale_while_revalidate_s"] = 86400
    assert "max_age_s + stale_while_revalidate_s must not exceed ttl_s" in parse_error(raw)


def test_negative_revalidate_window_rejected() -> None:
    raw = raw_spec()
    model_body(raw)["cache"]["stale_while_revalidate_s"] = -1
    assert "stale_while_revalidate_s: must be >= 0" in parse_error(raw)


@pytest.mark.parametrize(
    ("key", "value"),
    [("ttl_s", 0), ("ttl_s", -5), ("ttl_s", None), ("max_age_s", 0), ("ttl_s", True)],
)
def test_cache_numbers_must_be_positive(key: str, value: Any) -> None:
    raw = raw_spec()
    model_body(raw)["cache"][key] = value
    assert parse_error(raw).startswith(f"models.fraud_scorer.cache.{key}:")


def test_fractional_ttl_below_one_second_rejected() -> None:
    raw = raw_spec()
    model_body(raw)["cache"] = {"ttl_s": 0.5, "max_age_s": 0.25}
    with pytest.raises(SpecError, match=r"cache\.ttl_s"):
        parse_specs(raw)


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({}, "needs exactly one value per output"),
        ({"fraud_probability": 0.1, "other": 0.2}, "needs exactly one value per output"),
        ({"fraud_probability": "high"}, "must be a number"),
        ({"fraud_probability": float("nan")}, "must be finite"),
    ],
)
def test_default_scores_checked_against_outputs(scores: Any, message: str) -> None:
    raw = raw_spec()
    model_body(raw)["fallback"]["default_scores"] = scores
    assert message in parse_error(raw)


def test_fallback_and_freshness_are_optional() -> None:
    raw = raw_spec()
    del model_body(raw)["fallback"]
    del model_body(raw)["feature_freshness"]
    policy = parse_specs(raw)["fraud_scorer"].policy
    assert policy.default_scores is None
    assert policy.without_feature_store == "fail"
    assert policy.max_feature_age_s is None


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("fallback", "without_feature_store", "guess"),
        ("feature_freshness", "on_violation", "ignore"),
        ("feature_freshness", "max_age_s", 0),
        ("fallback", "retry", True),
    ],
)
def test_bad_policy_values(section: str, key: str, value: Any) -> None:
    raw = raw_spec()
    model_body(raw)[section][key] = value
    assert parse_error(raw).startswith(f"models.fraud_scorer.{section}")


@pytest.mark.parametrize("value", [0, -1, "64"])
def test_bad_max_batch_size(value: Any) -> None:
    raw = raw_spec()
    model_body(raw)["max_batch_size"] = value
    assert parse_error(raw).startswith("models.fraud_scorer.max_batch_size:")


@pytest.mark.parametrize("version", ["v1", "1.0", "", "-1"])
def test_bad_version(version: str) -> None:
    raw = raw_spec()
    model_body(raw)["triton"]["version"] = version
    msg = parse_error(raw)
    assert msg.startswith("models.fraud_scorer.triton.version:")
    assert repr(version) in msg


@pytest.mark.parametrize("key", ["outputs", "features"])
@pytest.mark.parametrize("value", ["missing", [], "x"])
def test_missing_or_empty_lists(key: str, value: Any) -> None:
    raw = raw_spec()
    if value == "missing":
        del model_body(raw)[key]
    else:
        model_body(raw)[key] = value
    assert parse_error(raw) == f"models.fraud_scorer.{key}: must be a non-empty list"


@pytest.mark.parametrize(
    ("section", "key"),
    [("triton", "input"), ("entity", "key"), ("entity", "namespace")],
)
def test_missing_required_names(section: str, key: str) -> None:
    raw = raw_spec()
    del model_body(raw)[section][key]
    assert parse_error(raw) == (
        f"models.fraud_scorer.{section}.{key}: missing or invalid name None"
    )


def test_missing_output_name() -> None:
    raw = raw_spec()
    del model_body(raw)["outputs"][0]["name"]
    assert parse_error(raw).startswith("models.fraud_scorer.outputs[0].name:")


# --- check_against_triton ---------------------------------------------------------------


def triton_metadata() -> dict[str, Any]:
    return {
        "name": "fraud_scorer",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": ["-1", "14"]}],
        "outputs": [{"name": "fraud_probability", "datatype": "FP32", "shape": ["-1", "1"]}],
    }


TRITON_CONFIG = {"name": "fraud_scorer", "max_batch_size": 1024}


def triton_error(spec: ModelSpec, metadata: dict[str, Any], config: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        check_against_triton(spec, metadata, config)
    return str(info.value)


def test_check_passes_for_matching_model(spec: ModelSpec) -> None:
    assert check_against_triton(spec, triton_metadata(), TRITON_CONFIG) is None


def test_check_passes_when_batch_sizes_equal(spec: ModelSpec) -> None:
    check_against_triton(spec, triton_metadata(), {"max_batch_size": 256})


def test_check_accepts_integer_shapes(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["inputs"][0]["shape"] = [-1, 14]
    md["outputs"][0]["shape"] = [-1, 1]
    check_against_triton(spec, md, {"max_batch_size": "1024"})


def test_check_input_name_mismatch(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["inputs"][0]["name"] = "input__0"
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.triton.input:")
    assert "'features'" in msg
    assert "['input__0']" in msg


def test_check_multiple_inputs(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["inputs"].append({"name": "extra", "datatype": "FP32", "shape": ["-1", "1"]})
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.triton.input: Triton model has 2 inputs")


def test_check_input_datatype_mismatch(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["inputs"][0]["datatype"] = "FP64"
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.triton.datatype:")
    assert "FP32" in msg
    assert "FP64" in msg


@pytest.mark.parametrize("shape", [["-1", "13"], ["-1", "15"], ["14"], ["1", "14"]])
def test_check_input_width_mismatch(spec: ModelSpec, shape: list[str]) -> None:
    md = triton_metadata()
    md["inputs"][0]["shape"] = shape
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.features:")
    assert "14 features" in msg


def test_check_output_name_mismatch(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["outputs"][0]["name"] = "probabilities"
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.outputs[0].name:")
    assert "'fraud_probability'" in msg


def test_check_output_dtype_mismatch(spec: ModelSpec) -> None:
    md = triton_metadata()
    md["outputs"][0]["datatype"] = "FP16"
    assert triton_error(spec, md, TRITON_CONFIG).startswith("models.fraud_scorer.outputs[0].dtype:")


@pytest.mark.parametrize("shape", [["-1", "2"], ["-1"], ["-1", "1", "1"]])
def test_check_output_shape_mismatch(spec: ModelSpec, shape: list[str]) -> None:
    md = triton_metadata()
    md["outputs"][0]["shape"] = shape
    msg = triton_error(spec, md, TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.outputs[0]:")
    assert "[-1, 1]" in msg


@pytest.mark.parametrize("config", [{"max_batch_size": 0}, {}])
def test_check_non_batching_model(spec: ModelSpec, config: dict[str, Any]) -> None:
    msg = triton_error(spec, triton_metadata(), config)
    assert msg.startswith("models.fraud_scorer:")
    assert "max_batch_size 0" in msg


def test_check_spec_batch_above_triton(spec: ModelSpec) -> None:
    msg = triton_error(spec, triton_metadata(), {"max_batch_size": 255})
    assert msg.startswith("models.fraud_scorer.max_batch_size: 256 exceeds Triton's")


def test_check_second_output_checked() -> None:
    raw = raw_spec()
    model_body(raw)["outputs"].append({"name": "reason_code", "dtype": "FP32"})
    model_body(raw)["fallback"]["default_scores"]["reason_code"] = 0
    spec = parse_specs(raw)["fraud_scorer"]
    msg = triton_error(spec, triton_metadata(), TRITON_CONFIG)
    assert msg.startswith("models.fraud_scorer.outputs[1].name:")


# --- resolve_version ------------------------------------------------------------------------


def with_version(version: str) -> ModelSpec:
    raw = raw_spec()
    model_body(raw)["triton"]["version"] = version
    return parse_specs(raw)["fraud_scorer"]


def test_resolve_pinned_present() -> None:
    assert resolve_version(with_version("2"), ["1", "2", "3"]) == "2"


def test_resolve_pinned_absent() -> None:
    with pytest.raises(SpecError) as info:
        resolve_version(with_version("4"), ["10", "9", "1"])
    msg = str(info.value)
    assert msg.startswith("models.fraud_scorer.triton.version: version 4 is not loaded")
    assert "['1', '9', '10']" in msg


def test_resolve_latest_is_numeric_not_lexicographic() -> None:
    assert resolve_version(with_version("latest"), ["9", "10", "2"]) == "10"
    assert resolve_version(with_version("latest"), ["1"]) == "1"


@pytest.mark.parametrize("version", ["latest", "1"])
def test_resolve_no_versions(version: str) -> None:
    with pytest.raises(SpecError, match="reports no versions"):
        resolve_version(with_version(version), [])


def test_raw_spec_not_mutated_by_parse() -> None:
    raw = raw_spec()
    before = copy.deepcopy(raw)
    parse_specs(raw)
    assert raw == before
