"""gateway.tensor.build_rows: request value > stored value > declared default; pack_row: the same
row for one entity, as the bytes Triton takes."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.errors import InvalidRequest
from gateway.spec import ModelSpec, load_specs, parse_specs
from gateway.tensor import build_rows, pack_row
from gateway.validation import EntityQuery

SPEC_PATH = Path(__file__).resolve().parents[2] / "config/models.yaml"
N = 14
AMOUNT, HOUR, RISK, HOME_KM = 0, 1, 2, 3

# Declared defaults of the shipped spec, in feature order (amount has none).
DEFAULTS = [12.0, 0.1, 5.0, 2.0, 1.0, 0.0, 0.0, 0.0, 2.0, 60.0, 365.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return load_specs(SPEC_PATH)["fraud_scorer"]


def stored_row(**values: bytes) -> list[bytes | None]:
    row: list[bytes | None] = [None] * N
    spec = load_specs(SPEC_PATH)["fraud_scorer"]
    for name, raw in values.items():
        row[spec.feature_by_name[name].index] = raw
    return row


def test_defaults_fill_everything_but_request_amount(spec: ModelSpec) -> None:
    rows = build_rows(spec, [EntityQuery("a", {AMOUNT: 99.5})], [None])
    assert rows.dtype == np.float32
    assert rows.shape == (1, N)
    np.testing.assert_array_equal(rows[0], np.array([99.5, *DEFAULTS], dtype=np.float32))


def test_column_order_is_spec_order(spec: ModelSpec) -> None:
    # a distinct request value per column: column j must hold the value given for index j
    overrides = {f.index: float(f.index) for f in spec.features}
    rows = build_rows(spec, [EntityQuery("a", overrides)], [None])
    np.testing.assert_array_equal(rows[0], np.arange(N, dtype=np.float32))
    assert [f.index for f in spec.features] == list(range(N))


def test_stored_value_beats_default(spec: ModelSpec) -> None:
    stored = stored_row(amount=b"12.5", hour_of_day=b"3", distance_from_home_km=b"0")
    rows = build_rows(spec, [EntityQuery("a", {})], [stored])
    assert rows[0, AMOUNT] == np.float32(12.5)
    assert rows[0, HOUR] == 3.0
    assert rows[0, HOME_KM] == 0.0  # a stored zero is a value, not "missing"
    assert rows[0, RISK] == np.float32(0.1)  # not stored: default


def test_request_beats_stored(spec: ModelSpec) -> None:
    stored = stored_row(amount=b"12.5", hour_of_day=b"3")
    rows = build_rows(spec, [EntityQuery("a", {AMOUNT: 0.0, HOUR: 22.0})], [stored])
    assert rows[0, AMOUNT] == 0.0  # a zero override still wins
    assert rows[0, HOUR] == 22.0


def test_precedence_per_item(spec: ModelSpec) -> None:
    items = [
        EntityQuery("a", {AMOUNT: 1.0}),
        EntityQuery("b", {}),
        EntityQuery("c", {AMOUNT: 3.0, RISK: 0.9}),
    ]
    stored = [
        stored_row(amount=b"100", merchant_category_risk=b"0.5"),
        stored_row(amount=b"200"),
        None,
    ]
    rows = build_rows(spec, items, stored)
    assert rows.shape == (3, N)
    np.testing.assert_array_equal(rows[:, AMOUNT], np.array([1.0, 200.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(rows[:, RISK], np.array([0.5, 0.1, 0.9], dtype=np.float32))


def test_missing_required_feature(spec: ModelSpec) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_rows(spec, [EntityQuery("card-7", {})], [stored_row(hour_of_day=b"1")])
    assert info.value.field == "features.amount"
    assert "'amount'" in info.value.detail
    assert "'card-7'" in info.value.detail


def test_missing_required_feature_with_prefix(spec: ModelSpec) -> None:
    items = [EntityQuery("a", {AMOUNT: 1.0}), EntityQuery("b", {})]
    with pytest.raises(InvalidRequest) as info:
        build_rows(spec, items, [None, None], field_prefix=["instances[0].", "instances[1]."])
    assert info.value.field == "instances[1].features.amount"


@pytest.mark.parametrize("raw", [b"abc", b"", b"\xff\xfe", b"12.5.1"])
def test_unparseable_stored_falls_back_to_default(
    spec: ModelSpec, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.tensor"):
        rows = build_rows(spec, [EntityQuery("a", {AMOUNT: 1.0})], [stored_row(hour_of_day=raw)])
    assert rows[0, HOUR] == 12.0
    assert [r.getMessage() for r in caplog.records] == ["unparseable stored feature"]


def test_unparseable_stored_required_feature_is_missing(spec: ModelSpec) -> None:
    with pytest.raises(InvalidRequest) as info:
        build_rows(spec, [EntityQuery("a", {})], [stored_row(amount=b"garbage")])
    assert info.value.field == "features.amount"


@pytest.mark.parametrize("raw", [b"nan", b"inf"])
def test_non_finite_stored_falls_back_to_default(spec: ModelSpec, raw: bytes) -> None:
    rows = build_rows(spec, [EntityQuery("a", {AMOUNT: 1.0})], [stored_row(hour_of_day=raw)])
    assert rows[0, HOUR] == 12.0


def test_empty_batch(spec: ModelSpec) -> None:
    rows = build_rows(spec, [], [])
    assert rows.shape == (0, N)
    assert rows.dtype == np.float32


@pytest.mark.parametrize(("dtype", "np_dtype"), [("FP64", np.float64), ("FP16", np.float16)])
def test_dtype_follows_spec(dtype: str, np_dtype: type) -> None:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    raw["models"]["fraud_scorer"]["triton"]["datatype"] = dtype
    spec = parse_specs(raw)["fraud_scorer"]
    rows = build_rows(spec, [EntityQuery("a", {AMOUNT: 0.5})], [None])
    assert rows.dtype == np_dtype
    assert rows[0, AMOUNT] == 0.5


def full_row(spec: ModelSpec, **values: bytes) -> list[bytes | None]:
    """Every feature stored (the common case), ``values`` replacing the generated ones."""
    row: list[bytes | None] = [b"%d.25" % (f.index + 1) for f in spec.features]
    for name, raw in values.items():
        row[spec.feature_by_name[name].index] = raw
    return row


def test_a_fully_stored_entity_is_read_column_for_column(spec: ModelSpec) -> None:
    rows = build_rows(spec, [EntityQuery("a", {}), EntityQuery("b", {})], [full_row(spec)] * 2)
    expected = np.arange(1, N + 1, dtype=np.float32) + np.float32(0.25)
    np.testing.assert_array_equal(rows, np.stack([expected, expected]))


@pytest.mark.parametrize("raw", [b"nan", b"-inf", b"garbage", b"", None])
def test_one_bad_value_in_a_full_row_falls_back_for_that_column_only(
    spec: ModelSpec, raw: bytes | None
) -> None:
    stored = full_row(spec)
    stored[HOUR] = raw
    rows = build_rows(spec, [EntityQuery("a", {})], [stored])
    expected = np.arange(1, N + 1, dtype=np.float32) + np.float32(0.25)
    expected[HOUR] = 12.0  # the declared default
    np.testing.assert_array_equal(rows[0], expected)


def test_overrides_win_over_a_full_row(spec: ModelSpec) -> None:
    rows = build_rows(spec, [EntityQuery("a", {HOUR: 7.0})], [full_row(spec)])
    assert rows[0, HOUR] == 7.0
    assert rows[0, AMOUNT] == np.float32(1.25)


def spec_of(dtype: str) -> ModelSpec:
    raw = yaml.safe_load(SPEC_PATH.read_text())
    raw["models"]["fraud_scorer"]["triton"]["datatype"] = dtype
    return parse_specs(raw)["fraud_scorer"]


EDGES = [b"0", b"-0.0", b"1e-45", b"1e-310", b"6e-8", b"65504", b"65520", b"3.4028235e38",
         b"1e39", b"1.7976931348623157e308", b"-2.5e-5", b"0.1", b"1e15", b" 7 "]  # fmt: skip


@pytest.mark.parametrize("dtype", ["FP16", "FP32", "FP64"])
def test_pack_row_is_build_rows_as_bytes(dtype: str) -> None:
    # The plain miss packs its row without numpy; Triton must get the very bytes build_rows'
    # array would have given it: same rounding, same overflow to inf, same fallbacks.
    spec = spec_of(dtype)
    rng = random.Random(7)
    rows: list[list[bytes | None]] = [full_row(spec)]
    rows += [[rng.choice(EDGES) for _ in range(N)] for _ in range(200)]
    rows += [[b"%r" % rng.uniform(-1e6, 1e6) for _ in range(N)] for _ in range(200)]
    rows += [[b"%r" % rng.lognormvariate(0, 20) for _ in range(N)] for _ in range(200)]
    for raw in (b"nan", b"inf", b"garbage", None):  # per-feature path: default for HOUR
        stored = full_row(spec)
        stored[HOUR] = raw
        rows.append(stored)
    rows.append(stored_row(amount=b"3"))  # only the required feature stored: defaults
    for stored in rows:
        with np.errstate(over="ignore"):
            expected = build_rows(spec, [EntityQuery("a", {})], [stored]).tobytes()
            assert pack_row(spec, "a", stored) == expected, stored


def test_pack_row_is_little_endian_values_of_the_spec_dtype(spec: ModelSpec) -> None:
    packed = pack_row(spec, "a", full_row(spec))
    expected = np.arange(1, N + 1, dtype="<f4") + np.float32(0.25)
    assert packed == expected.tobytes()


def test_pack_row_without_a_required_value_is_the_clients_error(spec: ModelSpec) -> None:
    with pytest.raises(InvalidRequest) as info:
        pack_row(spec, "card-7", stored_row(hour_of_day=b"1"))
    assert info.value.field == "features.amount"
    with pytest.raises(InvalidRequest):
        pack_row(spec, "card-7", None)
