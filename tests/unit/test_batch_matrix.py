"""Input matrices for whole chunks: column-wise, with the API's and the online path's rules."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gateway.batch.matrix import Column, column_from_arrow, input_rows, stored_rows
from gateway.errors import InvalidRequest
from gateway.spec import ModelSpec, load_specs
from gateway.validation import coerce_feature

ROOT = Path(__file__).resolve().parents[2]


@cache
def spec() -> ModelSpec:
    return load_specs(ROOT / "config/models.yaml")["fraud_scorer"]


def columns(**values: list[Any]) -> dict[str, Column]:
    return {name: column_from_arrow(pa.array(v)) for name, v in values.items()}


def test_columns_land_in_spec_order_and_defaults_fill_the_rest() -> None:
    rows = input_rows(spec(), columns(amount=[10.5, 20.0], hour_of_day=[3, None]), 2)
    assert rows.matrix.dtype == np.float32
    assert rows.matrix.shape == (2, len(spec().features))
    assert rows.valid.tolist() == [True, True]
    expected = [f.default for f in spec().features]
    expected[0], expected[1] = 10.5, 3
    assert rows.matrix[0].tolist() == pytest.approx(expected)
    assert rows.matrix[1, 1] == 12  # empty cell: the declared default


@pytest.mark.parametrize(
    ("name", "cells", "reason"),
    [
        ("amount", [5.0, None], "missing required feature 'amount'"),
        ("amount", [5.0, -1.0], "amount=-1.0 is outside [0, 1000000]"),
        ("amount", [5.0, float("inf")], "amount must be finite"),
        ("amount", [5.0, float("nan")], "amount must be finite"),
        ("amount", ["5", "12x"], "amount must be a number, got '12x'"),
        ("hour_of_day", [1, 2.5], "hour_of_day must be an integer, got 2.5"),
        ("hour_of_day", [1, 24], "hour_of_day=24 is outside [0, 23]"),
        ("card_present", [1, 2], "card_present must be true or false, got 2"),
    ],
)
def test_invalid_values_make_the_row_invalid_with_the_apis_wording(
    name: str, cells: list[Any], reason: str
) -> None:
    values: dict[str, list[Any]] = {"amount": [5.0, 5.0], name: cells}
    rows = input_rows(spec(), columns(**values), 2)
    assert rows.valid.tolist() == [True, False]
    assert rows.reasons[1].startswith(reason)
    assert not rows.matrix[1].any()  # invalid rows are zeroed, never sent


def test_first_problem_in_spec_order_is_the_reason() -> None:
    rows = input_rows(spec(), columns(amount=[-1.0], hour_of_day=[99]), 1)
    assert rows.reasons == {0: "amount=-1.0 is outside [0, 1000000]"}


def test_a_required_feature_without_a_column_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="amount"):
        input_rows(spec(), columns(hour_of_day=[1]), 1)


def test_booleans_and_text_numbers_convert() -> None:
    rows = input_rows(spec(), columns(amount=["12.5", "7"], is_online=[True, False]), 2)
    assert rows.valid.all()
    assert rows.matrix[:, 0].tolist() == [12.5, 7.0]
    assert rows.matrix[:, spec().feature_by_name["is_online"].index].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "value", [0, 1, 23, 24, -1, 0.5, 2.0, 1e6, 1e6 + 1, 20040, 20040.5, 100, 101, 36500, 36501]
)
def test_vectorised_checks_agree_with_coerce_feature(value: float) -> None:
    for feature in spec().features:
        try:
            coerce_feature(feature, int(value) if float(value).is_integer() else value, "f")
            accepted = True
        except InvalidRequest:
            accepted = False
        values: dict[str, list[Any]] = {"amount": [1.0], feature.name: [value]}
        rows = input_rows(spec(), columns(**values), 1)
        assert bool(rows.valid[0]) == accepted, (feature.name, value)


def stored(values: list[list[float | None]]) -> dict[str, Column]:
    names = [f.name for f in spec().features]
    out = {}
    for j, name in enumerate(names):
        raw = [row[j] if j < len(row) else None for row in values]
        out[name] = column_from_arrow(pa.array(raw, type=pa.float64()))
    return out


def test_stored_values_fall_back_to_defaults_like_the_online_path() -> None:
    # entity 0: everything; 1: only amount; 2: amount + an unreadable (NaN) hour; 3: nothing
    full = [float(i) for i in range(len(spec().features))]
    full[0] = 42.0
    cols = stored([full, [7.0], [7.0, float("nan")], []])
    rows = stored_rows(spec(), cols, 4)
    assert rows.valid.tolist() == [True, True, True, False]
    assert rows.matrix[0].tolist() == pytest.approx(full)
    assert rows.matrix[1, 1] == 12
    assert rows.matrix[2, 1] == 12
    assert "no stored features" in rows.reasons[3]


def test_stored_entity_without_a_required_feature_is_invalid() -> None:
    rows = stored_rows(spec(), stored([[None, 5.0]]), 1)
    assert rows.valid.tolist() == [False]
    assert "'amount' has no usable stored value" in rows.reasons[0]


def test_stored_entity_with_only_an_event_time_counts_as_stored() -> None:
    written_at = column_from_arrow(pa.array([1.7e9], type=pa.float64()))
    rows = stored_rows(spec(), stored([[None]]), 1, written_at=written_at)
    assert "'amount'" in rows.reasons[0]  # not "no stored features"
