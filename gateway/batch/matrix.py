"""Model input matrices for many entities at once, built column by column with numpy.

Two builders, with the two semantics the gateway already has for where a value comes from:

* ``input_rows`` (file source): the values are external input, checked like a request's
  (``gateway.validation.coerce_feature``): a non-number, NaN/Inf, a fraction for an ``int``,
  anything but 0/1 for a ``bool`` or a value outside the declared bounds makes the row
  invalid with the same wording as the API's 422; an empty cell takes the declared default,
  and an empty required feature makes the row invalid.
* ``stored_rows`` (feature-store source): the values were validated when they were loaded;
  like the online path (``gateway.tensor.build_rows``) a missing or unreadable stored value
  takes the declared default, and only a required feature without a usable value (or an
  entity without any stored field) makes the row invalid.

Invalid rows stay in the matrix (filled with zeros) so chunk positions are stable; the caller
sends only ``rows.valid`` rows to Triton. Reasons are built for invalid rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from gateway.spec import FeatureSpec, ModelSpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

NUMPY_DTYPES: Mapping[str, type[np.floating[Any]]] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@dataclass(frozen=True, slots=True)
class Column:
    """One feature's values for n rows, as float64."""

    values: FloatArray
    """NaN where missing or not a number."""
    missing: BoolArray
    """Null / empty cell: the declared default applies."""
    not_numeric: BoolArray | None = None
    """Present but not a number (text in a numeric column); None when there is none."""
    raw: pa.ChunkedArray | pa.Array | None = None
    """The source values, only kept to quote a bad one in a message."""


@dataclass(frozen=True, slots=True)
class Rows:
    matrix: npt.NDArray[np.floating[Any]]
    """[n, n_features], spec order and input dtype; zeros in invalid rows."""
    valid: BoolArray
    reasons: dict[int, str]
    """Row position → why it is invalid (first problem in spec order)."""

    @property
    def n_invalid(self) -> int:
        return len(self.reasons)


def column_from_arrow(values: pa.ChunkedArray | pa.Array) -> Column:
    """Any arrow column as float64: numbers and booleans cast at C speed; text cell by cell."""
    missing = values.is_null().to_numpy(zero_copy_only=False)
    try:
        as_float = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _column_from_text(values, missing)
    return Column(
        values=np.asarray(as_float.to_numpy(zero_copy_only=False), dtype=np.float64),
        missing=np.asarray(missing, dtype=bool),
        raw=values,
    )


def _column_from_text(values: pa.ChunkedArray | pa.Array, missing: BoolArray) -> Column:
    out = np.full(len(values), np.nan)
    not_numeric = np.zeros(len(values), dtype=bool)
    for i, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError, OverflowError):
            not_numeric[i] = True
    return Column(out, np.asarray(missing, dtype=bool), not_numeric, raw=values)


def input_rows(spec: ModelSpec, columns: Mapping[str, Column], n: int) -> Rows:
    """Validate external input (file source). A feature without a column takes its default;
    the caller rejects files that lack a required feature's column."""
    matrix = np.zeros((n, len(spec.features)), dtype=NUMPY_DTYPES[spec.input_dtype])
    invalid = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    for feature in spec.features:
        column = columns.get(feature.name)
        if column is None:
            if feature.default is None:
                raise ValueError(f"no column for required feature {feature.name!r}")
            matrix[:, feature.index] = feature.default
            continue
        values, missing = column.values, column.missing
        present = ~missing
        checks: list[tuple[BoolArray, str]] = []
        if column.not_numeric is not None:
            checks.append((column.not_numeric, "not_numeric"))
        if feature.default is None:
            checks.append((missing, "missing"))
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(values)
            numeric = present if column.not_numeric is None else present & ~column.not_numeric
            checks.append((numeric & ~finite, "finite"))
            if feature.dtype == "bool":
                checks.append((finite & (values != 0) & (values != 1), "bool"))
            else:
                if feature.dtype == "int":
                    checks.append((finite & (values != np.floor(values)), "int"))
                checks.append(
                    (finite & ((values < feature.minimum) | (values > feature.maximum)), "bounds")
                )
        for mask, kind in checks:
            new = mask & ~invalid
            if new.any():
                for row in np.flatnonzero(new).tolist():
                    reasons[row] = _reason(feature, kind, column, row)
                invalid |= new
        filled = values if feature.default is None else np.where(missing, feature.default, values)
        matrix[:, feature.index] = filled
    matrix[invalid] = 0
    return Rows(matrix=matrix, valid=~invalid, reasons=reasons)


def stored_rows(
    spec: ModelSpec, columns: Mapping[str, Column], n: int, *, written_at: Column | None = None
) -> Rows:
    """Stored features (feature-store source), with the online path's fallbacks.

    ``written_at`` (the hash's ``_ts``) only tells whether the entity has a hash at all: an
    entity with nothing stored is invalid, one with only defaults is scored like online.
    """
    matrix = np.zeros((n, len(spec.features)), dtype=NUMPY_DTYPES[spec.input_dtype])
    usable_any = np.zeros(n, dtype=bool) if written_at is None else ~written_at.missing
    invalid = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    required_missing: list[tuple[FeatureSpec, BoolArray]] = []
    for feature in spec.features:
        column = columns[feature.name]
        with np.errstate(invalid="ignore"):
            usable = np.isfinite(column.values)
        usable_any |= ~column.missing
        if feature.default is None:
            required_missing.append((feature, ~usable))
            matrix[:, feature.index] = np.where(usable, column.values, 0.0)
        else:
            matrix[:, feature.index] = np.where(usable, column.values, feature.default)
    nothing_stored = ~usable_any
    for row in np.flatnonzero(nothing_stored).tolist():
        reasons[row] = "no stored features (entity deleted since the job listed it?)"
    invalid |= nothing_stored
    for feature, mask in required_missing:
        new = mask & ~invalid
        for row in np.flatnonzero(new).tolist():
            reasons[row] = (
                f"feature {feature.name!r} has no usable stored value and no declared default"
            )
        invalid |= new
    matrix[invalid] = 0
    return Rows(matrix=matrix, valid=~invalid, reasons=reasons)


def _reason(feature: FeatureSpec, kind: str, column: Column, row: int) -> str:
    """The API's wording for the same problem (``coerce_feature``)."""
    name = feature.name
    if kind == "missing":
        return f"missing required feature {name!r} (empty cell, no declared default)"
    if kind == "not_numeric" or kind == "bool":
        shown = _shown(column, row)
        if feature.dtype == "bool":
            return f"{name} must be true or false, got {shown}"
        noun = "an integer" if feature.dtype == "int" else "a number"
        return f"{name} must be {noun}, got {shown}"
    if kind == "finite":
        return f"{name} must be finite"
    if kind == "int":
        return f"{name} must be an integer, got {_shown(column, row)}"
    return (
        f"{name}={_shown(column, row)} is outside [{_bound(feature.minimum)}, "
        f"{_bound(feature.maximum)}]"
    )


def _shown(column: Column, row: int) -> str:
    if column.raw is not None:
        return repr(column.raw[row].as_py())
    return repr(float(column.values[row]))


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
