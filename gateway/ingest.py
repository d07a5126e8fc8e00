"""Load entity features from CSV or Parquet into the feature store.

The whole file is validated against the model spec before anything is written, so a bad
file is rejected with the row and column named and leaves Redis untouched. An optional
``event_time`` column (Unix seconds) says when each row's values were true; without it every
row is as of the load. Rows older than what is stored are skipped, never applied. Every row
goes through the feature writer's script (``RedisStore.write_features``), which also adds
the id to the namespace's id index, so a load needs no ``reindex-features`` afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from gateway.errors import InvalidRequest
from gateway.features import FeatureUpdate
from gateway.spec import ModelSpec
from gateway.store import RedisStore
from gateway.validation import coerce_feature, parse_entity_id, parse_event_time

EVENT_TIME_COLUMN = "event_time"


class IngestError(ValueError):
    """The input file does not match the model spec; nothing was written."""


@dataclass(frozen=True, slots=True)
class IngestReport:
    entities: int
    skipped_older: int
    features: list[str]
    seconds: float


def read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            # Entity ids stay text even when they look numeric.
            return pa_csv.read_csv(path)
    except (OSError, pa.ArrowException) as e:
        raise IngestError(f"cannot read {path}: {e}") from e
    raise IngestError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


def validate_rows(spec: ModelSpec, table: pa.Table, *, now: float) -> list[FeatureUpdate]:
    columns = table.column_names
    if spec.entity_key not in columns:
        raise IngestError(f"missing entity key column {spec.entity_key!r}")
    meta = {spec.entity_key, EVENT_TIME_COLUMN}
    unknown = [c for c in columns if c not in meta and c not in spec.feature_by_name]
    if unknown:
        raise IngestError(f"unknown column(s) {unknown} for model {spec.name!r}")
    feature_columns = [c for c in columns if c not in meta]
    data: dict[str, list[Any]] = {c: table.column(c).to_pylist() for c in columns}
    times = data.get(EVENT_TIME_COLUMN)
    rows: list[FeatureUpdate] = []
    for i, raw_id in enumerate(data[spec.entity_key]):
        try:
            entity_id = parse_entity_id(spec, raw_id, spec.entity_key)
            values: dict[str, float] = {}
            for name in feature_columns:
                value = data[name][i]
                if value is not None:  # empty cell: not stored, the default applies
                    values[name] = coerce_feature(spec.feature_by_name[name], value, name)
            event_time = (
                now
                if times is None or times[i] is None
                else parse_event_time(times[i], EVENT_TIME_COLUMN, now=now)
            )
        except InvalidRequest as e:
            raise IngestError(f"row {i + 1}, column {e.field!r}: {e.detail}") from e
        rows.append(FeatureUpdate(entity_id, values, event_time))
    return rows


async def load_features(
    store: RedisStore,
    spec: ModelSpec,
    path: Path,
    *,
    invalidate: list[tuple[str, str]] | None = None,
) -> IngestReport:
    """``invalidate``: the (model, version) caches to drop for every updated entity."""
    started = time.perf_counter()
    table = read_table(path)
    rows = validate_rows(spec, table, now=time.time())
    report = await store.write_features(spec.entity_namespace, rows, invalidate=invalidate or [])
    features = [c for c in table.column_names if c not in (spec.entity_key, EVENT_TIME_COLUMN)]
    return IngestReport(
        entities=report.applied,
        skipped_older=report.skipped_older,
        features=features,
        seconds=time.perf_counter() - started,
    )
