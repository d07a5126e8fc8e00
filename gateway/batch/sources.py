"""Where a job's entities come from: a Parquet/CSV file, or every entity of the model's
namespace in the feature store. Both cut the shard's entities into deterministic chunks.

Chunk k is positions ``[k*B, (k+1)*B)`` of the shard's entities in a fixed order: file order
for a file, snapshot order (below) for the feature store. Same input, shard and batch size →
same chunks on every run, which is what lets a checkpoint name chunks by number.

File source: read with pyarrow (only the entity key, the declared features and an optional
``event_time`` column), validated and turned into one matrix for the whole shard, column by
column. The features' as-of time (``features_at`` of each prediction) is the row's
``event_time`` (timestamp, or Unix seconds) when the file has one, else the job's start time,
which the checkpoint keeps so a resumed job writes the same value.

Feature-store source. The job first takes a *snapshot* of the shard's entity ids: a list in
Redis that fixes which entities the job scores and in what order. Then it scores chunks of that
list, reading each chunk's features when it scores it. The ids come from the namespace's id
index (``gw:fi:<namespace>``, a sorted set the feature writer keeps, gateway/features.py)
when ``reindex-features`` has marked it complete, else from a SCAN of ``gw:f:<namespace>:*``.

* Index: pages of ids in byte order (``ZRANGE … BYLEX`` after the last id listed); each
  page's ids of the shard are appended to the list together with that last id as the cursor,
  in one atomic call. Pages never overlap, so no id is listed twice, and the call refuses a
  page whose cursor is not the saved one (a retry after a lost reply appends nothing).
* SCAN (fallback for data written before the index existed): each page's new ids and the
  cursor after the page are appended in one atomic call. SCAN may return a key more than once
  (when Redis resizes its table during the scan), and a page scanned again after a crash
  returns its keys again; a set of the ids seen so far (updated in the same call) lets each id
  into the list once. SCAN walks the whole keyspace (predictions, other namespaces), the index
  only this namespace.
* Resume: a crash during the snapshot continues from the saved cursor (SCAN cursors are
  stateless on the server and stay valid across client restarts; an index cursor is an id);
  a snapshot keeps the mode it started with. A crash while scoring continues with the chunks
  not yet committed. The list only grows and is fixed once the snapshot is complete, so chunk
  numbers keep their meaning however the keyspace changes afterwards.
* Which entities: every entity present for the whole snapshot is in it; one created or
  deleted meanwhile may or may not be. Features are read when the chunk is scored, so a
  prediction is computed from the entity's features at that moment and carries their ``_ts``
  as ``features_at``; an entity deleted after the snapshot (or an index entry whose hash was
  deleted by hand) counts as invalid ("no stored features").
* Reads: one script call per 256 positions of the list reads the ids there and HMGETs each
  entity's features, and answers with the ids and one CSV text of the values, which pyarrow
  turns into float64 columns (``_columns_from_csv``); no per-entity argument or reply object
  crosses redis-py.
* Cost: the snapshot holds the shard's ids in Redis while the job runs (~20 bytes each from
  the index; ~70 with SCAN's set of seen ids); it is deleted when the job completes (and
  expires with the checkpoint otherwise). Each shard lists the whole namespace and keeps its
  part, so N shards read the ids N times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from gateway.batch.checkpoint import CheckpointState, SnapshotMode, chunk_bounds
from gateway.batch.errors import BatchError, SourceError
from gateway.batch.matrix import Column, column_from_arrow, input_rows, stored_rows
from gateway.batch.sharding import Shard, owned, shard_mask
from gateway.batch.store import BatchStore
from gateway.errors import InvalidRequest
from gateway.features import EVENT_TIME_FIELD, feature_key, index_complete_key, index_key
from gateway.spec import ModelSpec
from gateway.validation import MAX_CLOCK_SKEW_S, parse_event_time

log = logging.getLogger(__name__)

FEATURE_STORE = "feature-store"
EVENT_TIME_COLUMN = "event_time"
SCAN_COUNT = 2000
"""SCAN's COUNT hint: keys Redis looks at per call of the snapshot."""
INDEX_PAGE = 5000
"""Ids read from the id index per call of the snapshot (~1 ms of Redis)."""
_TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    entity_ids: list[str]
    """Entity ids in chunk order; ``row N`` (the file row) where the id itself is invalid."""
    matrix: npt.NDArray[np.floating[Any]]
    """[n, n_features] model input; zeros in invalid rows (never sent to Triton)."""
    valid: npt.NDArray[np.bool_]
    reasons: dict[int, str]
    """Position in the chunk → why that row is invalid."""
    features_at: npt.NDArray[np.float64]
    """As-of time of each row's features (Unix seconds); NaN = unknown."""
    raw_ids: list[bytes] | None = None
    """The ids as stored in Redis (feature-store source), to build keys without re-encoding."""

    def __len__(self) -> int:
        return len(self.entity_ids)


class Source(Protocol):
    @property
    def identity(self) -> str:
        """What names the input in the default job id (and in the checkpoint)."""
        ...

    @property
    def total(self) -> int:
        """Entities in the shard (after ``prepare``)."""
        ...

    async def prepare(
        self, state: CheckpointState, token: str, note: Callable[[str], None]
    ) -> None:
        """Read the input (or take the snapshot); ``note`` reports how far it got."""
        ...

    async def read_chunk(self, index: int) -> Chunk: ...


# -- file ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Loaded:
    """The whole shard of a file, validated: chunks are slices of it."""

    entity_ids: list[str]
    matrix: npt.NDArray[np.floating[Any]]
    valid: npt.NDArray[np.bool_]
    reasons_by_chunk: dict[int, dict[int, str]]
    features_at: npt.NDArray[np.float64]


class FileSource:
    """A ``.csv`` or ``.parquet`` file (local path)."""

    def __init__(self, path: Path, spec: ModelSpec, shard: Shard, batch_size: int) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise SourceError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
        try:
            stat = path.stat()
        except OSError as e:
            raise SourceError(f"cannot read {path}: {e.strerror}") from e
        self.path = path
        self._spec = spec
        self._shard = shard
        self._batch_size = batch_size
        self._identity = f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self._loaded: _Loaded | None = None

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def total(self) -> int:
        return len(self._data.entity_ids)

    @property
    def _data(self) -> _Loaded:
        if self._loaded is None:
            raise RuntimeError("prepare() first")
        return self._loaded

    async def prepare(
        self, state: CheckpointState, token: str, note: Callable[[str], None]
    ) -> None:
        note(f"reading {self.path.name}")
        # Off the event loop: reading and checking a large file takes a while, and signals
        # (SIGTERM) must still be handled meanwhile.
        self._loaded = await asyncio.to_thread(self._load, state.created_at)

    async def read_chunk(self, index: int) -> Chunk:
        data = self._data
        start, stop = chunk_bounds(index, self.total, self._batch_size)
        return Chunk(
            index=index,
            entity_ids=data.entity_ids[start:stop],
            matrix=data.matrix[start:stop],
            valid=data.valid[start:stop],
            reasons=data.reasons_by_chunk.get(index, {}),
            features_at=data.features_at[start:stop],
        )

    def _load(self, started_at: float) -> _Loaded:
        spec = self._spec
        table = self._read_table()
        raw_ids = table.column(spec.entity_key)
        if not pa.types.is_string(raw_ids.type):
            raw_ids = raw_ids.cast(pa.string())
        all_ids: list[str | None] = raw_ids.to_pylist()
        mask = shard_mask(all_ids, self._shard)
        positions = np.flatnonzero(mask)
        table = table.filter(pa.array(mask))
        ids, id_reasons = check_entity_ids(
            spec, [all_ids[p] for p in positions.tolist()], (positions + 1).tolist()
        )
        columns = {
            f.name: column_from_arrow(table.column(f.name))
            for f in spec.features
            if f.name in table.column_names
        }
        rows = input_rows(spec, columns, len(ids))
        if EVENT_TIME_COLUMN in table.column_names:
            features_at, time_reasons = event_times(
                table.column(EVENT_TIME_COLUMN), default=started_at, now=time.time()
            )
        else:
            features_at, time_reasons = np.full(len(ids), started_at), {}
        # One reason per row: a bad id first, then a bad time, then the first bad feature.
        reasons = {**rows.reasons, **time_reasons, **id_reasons}
        valid = rows.valid.copy()
        valid[list(reasons)] = False
        matrix = rows.matrix
        matrix[~valid] = 0
        by_chunk: dict[int, dict[int, str]] = {}
        for position, reason in reasons.items():
            chunk, offset = divmod(position, self._batch_size)
            by_chunk.setdefault(chunk, {})[offset] = reason
        return _Loaded(ids, matrix, valid, by_chunk, features_at)

    def _read_table(self) -> pa.Table:
        spec, path = self._spec, self.path
        try:
            if path.suffix.lower() == ".parquet":
                names = pq.read_schema(path).names
            else:
                with pa_csv.open_csv(path) as reader:
                    names = reader.schema.names
            if spec.entity_key not in names:
                raise SourceError(f"{path}: no entity key column {spec.entity_key!r}")
            missing = [f.name for f in spec.features if f.default is None and f.name not in names]
            if missing:
                raise SourceError(f"{path}: no column for required feature(s) {missing}")
            wanted = [spec.entity_key, *(f.name for f in spec.features if f.name in names)]
            if EVENT_TIME_COLUMN in names:
                wanted.append(EVENT_TIME_COLUMN)
            if path.suffix.lower() == ".parquet":
                return pq.read_table(path, columns=wanted)
            return pa_csv.read_csv(
                path,
                convert_options=pa_csv.ConvertOptions(
                    include_columns=wanted,
                    # Ids stay text even when they look numeric ("000123" is not 123).
                    column_types={spec.entity_key: pa.string()},
                ),
            )
        except (OSError, pa.ArrowException) as e:
            raise SourceError(f"cannot read {path}: {e}") from e


def check_entity_ids(
    spec: ModelSpec, ids: Sequence[str | None], row_numbers: Sequence[int]
) -> tuple[list[str], dict[int, str]]:
    """``parse_entity_id``'s rules (non-empty, at most max_id_length, printable, no spaces)
    plus: an id appears once per file. Returns the ids (``row N`` labels for bad ones) and
    position → reason for the bad ones."""
    out: list[str] = []
    reasons: dict[int, str] = {}
    first_row: dict[str, int] = {}
    limit = spec.max_id_length
    for position, (entity_id, row) in enumerate(zip(ids, row_numbers, strict=True)):
        if not entity_id:
            reasons[position] = "entity id is missing"
        elif len(entity_id) > limit:
            reasons[position] = f"entity id longer than {limit} characters"
        # isprintable() is False for every whitespace character except the ASCII space.
        elif not entity_id.isprintable() or " " in entity_id:
            reasons[position] = "entity id must not contain whitespace or control characters"
        else:
            seen = first_row.setdefault(entity_id, row)
            if seen == row:
                out.append(entity_id)
                continue
            reasons[position] = f"duplicate entity id {entity_id!r} (first at row {seen})"
        out.append(f"row {row}")
    return out, reasons


def event_times(
    column: pa.ChunkedArray, *, default: float, now: float
) -> tuple[npt.NDArray[np.float64], dict[int, str]]:
    """``event_time`` as Unix seconds, with the ingest's rules (``parse_event_time``): a
    timestamp (naive = UTC), a date, Unix seconds, or RFC 3339 text with an offset; positive
    and not in the future. An empty cell means the job's start time, as a load means "now".
    Returns the times and position → reason for the rows whose time is invalid."""
    kind = column.type
    missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    reasons: dict[int, str] = {}
    if pa.types.is_date(kind):
        column = column.cast(pa.timestamp("s"))
        kind = column.type
    if pa.types.is_timestamp(kind):
        scale = _TIME_UNITS[kind.unit]
        values = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / scale
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = np.full(len(column), np.nan)
        for i, text in enumerate(column.to_pylist()):
            if text is not None:
                try:
                    values[i] = parse_event_time(text, EVENT_TIME_COLUMN, now=now)
                except InvalidRequest as e:
                    reasons[i] = e.detail
    else:
        raise SourceError(
            f"column {EVENT_TIME_COLUMN!r} must hold timestamps or Unix seconds, not {kind}"
        )
    values = np.where(missing, default, values)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values <= 0)
        future = values > now + MAX_CLOCK_SKEW_S
    for i in np.flatnonzero(bad).tolist():
        reasons.setdefault(i, "event_time must be a positive, finite time")
    for i in np.flatnonzero(future).tolist():
        reasons.setdefault(i, f"event_time is more than {MAX_CLOCK_SKEW_S:.0f}s in the future")
    return values, reasons


# -- feature store ---------------------------------------------------------------------------


def feature_store_identity(namespace: str) -> str:
    return f"{FEATURE_STORE}:{namespace}"


class FeatureStoreSource:
    """Every entity of the model's namespace in the feature store (``gw:f:<namespace>:*``)."""

    def __init__(
        self,
        store: BatchStore,
        spec: ModelSpec,
        shard: Shard,
        batch_size: int,
    ) -> None:
        self._store = store
        self._spec = spec
        self._shard = shard
        self._batch_size = batch_size
        self._namespace = spec.entity_namespace
        self._prefix = feature_key(spec.entity_namespace, "")
        self._fields = [*(f.name for f in spec.features), EVENT_TIME_FIELD]
        self._total: int | None = None
        self.snapshot_mode: SnapshotMode | None = None
        """How the snapshot was taken (after ``prepare``)."""

    @property
    def identity(self) -> str:
        return feature_store_identity(self._spec.entity_namespace)

    @property
    def total(self) -> int:
        if self._total is None:
            raise RuntimeError("prepare() first")
        return self._total

    async def prepare(
        self, state: CheckpointState, token: str, note: Callable[[str], None]
    ) -> None:
        # A snapshot keeps the mode it started with: its cursor only means something there.
        mode = state.snapshot_mode
        if not state.snapshot_complete:
            if mode is None:
                complete = await self._store.index_is_complete(
                    index_key(self._namespace), index_complete_key(self._namespace)
                )
                mode = "index" if complete else "scan"
            if mode == "index":
                await self._snapshot_from_index(state.snapshot_cursor, token, note)
            else:
                log.warning(
                    "no complete id index for this namespace: listing its entities by SCAN "
                    "over the whole keyspace; run `python -m gateway reindex-features` once",
                    extra={"namespace": self._namespace},
                )
                await self._snapshot_by_scan(int(state.snapshot_cursor or b"0"), token, note)
        self.snapshot_mode = mode
        self._total = await self._store.snapshot_size()

    async def _snapshot_from_index(
        self, cursor: bytes, token: str, note: Callable[[str], None]
    ) -> None:
        """Page through the id index from ``cursor`` (the last id already listed). Page n's
        ids of this shard and the cursor after it are saved in one atomic call, in page
        order; reading page n+1 overlaps saving page n. Without a shard to filter by, the
        pages are copied inside Redis and no id travels to the job and back."""
        index = index_key(self._namespace)
        listed = kept = 0
        if self._shard.is_everything:
            last_page = False
            while not last_page:
                copied, last_page = await self._store.copy_index_page(token, index, INDEX_PAGE)
                listed += copied
                note(f"snapshot: {listed:,} ids listed from the index")
            return
        saving: asyncio.Task[bool] | None = None
        try:
            while True:
                ids = await self._store.index_page(index, cursor, INDEX_PAGE)
                last_page = len(ids) < INDEX_PAGE
                own = owned(ids, self._shard)
                if saving is not None:
                    await saving
                after, cursor = cursor, ids[-1] if ids else cursor
                saving = asyncio.create_task(
                    self._store.add_index_page(token, after, cursor, complete=last_page, ids=own)
                )
                listed, kept = listed + len(ids), kept + len(own)
                note(f"snapshot: {listed:,} ids listed from the index, {kept:,} of this shard")
                if last_page:
                    break
            await saving
        finally:
            if saving is not None and not saving.done():
                saving.cancel()

    async def _snapshot_by_scan(self, cursor: int, token: str, note: Callable[[str], None]) -> None:
        """SCAN from ``cursor`` to the end. Page n's ids and the cursor after it are saved in
        one atomic call, in page order; SCANning page n+1 overlaps saving page n."""
        prefix = self._prefix.encode()
        match = self._prefix + "*"
        scanned = kept = 0
        saving: asyncio.Task[None] | None = None
        try:
            while True:
                next_cursor, keys = await self._store.scan_page(cursor, match, SCAN_COUNT)
                ids = []
                for key in keys:
                    try:
                        ids.append(key[len(prefix) :].decode())
                    except UnicodeDecodeError:
                        log.warning("skipping a feature key that is not UTF-8", extra={"key": key})
                if not self._shard.is_everything:
                    mask = shard_mask(ids, self._shard)
                    ids = [i for i, own in zip(ids, mask, strict=True) if own]
                if saving is not None:
                    await saving
                saving = asyncio.create_task(self._store.add_scan_page(token, next_cursor, ids))
                scanned, kept = scanned + len(keys), kept + len(ids)
                note(f"snapshot: {scanned:,} keys scanned, {kept:,} entities of this shard")
                if next_cursor == 0:
                    break
                cursor = next_cursor
            await saving
        finally:
            if saving is not None and not saving.done():
                saving.cancel()

    async def read_chunk(self, index: int) -> Chunk:
        start, stop = chunk_bounds(index, self.total, self._batch_size)
        raw_ids, text = await self._store.read_snapshot_features(
            start, stop, self._prefix, self._fields
        )
        if len(raw_ids) != stop - start:
            raise BatchError(
                f"the job's entity snapshot lost entries ({len(raw_ids)} of {stop - start} ids "
                f"at {start}); it may have expired: rerun with --restart"
            )
        columns = _columns_from_csv(text, self._fields, len(raw_ids))
        if columns is None:
            # A stored value the CSV reply cannot carry (a comma, a quote): read it literally.
            prefix = self._prefix.encode()
            replies = await self._store.read_features([prefix + i for i in raw_ids], self._fields)
            columns = _columns_from_replies(replies, self._fields)
        rows = stored_rows(self._spec, columns, len(raw_ids), written_at=columns[EVENT_TIME_FIELD])
        return Chunk(
            index=index,
            # surrogateescape: an id that is not UTF-8 (written by hand) survives the round
            # trip to its prediction key byte for byte.
            entity_ids=[i.decode(errors="surrogateescape") for i in raw_ids],
            matrix=rows.matrix,
            valid=rows.valid,
            reasons=rows.reasons,
            features_at=columns[EVENT_TIME_FIELD].values,
            raw_ids=raw_ids,
        )


@functools.cache
def _csv_options(
    fields: tuple[str, ...],
) -> tuple[pa_csv.ReadOptions, pa_csv.ParseOptions, pa_csv.ConvertOptions]:
    # Built once per field list: constructing them costs about as much as parsing a chunk.
    return (
        pa_csv.ReadOptions(column_names=list(fields), use_threads=False),
        pa_csv.ParseOptions(quote_char=False),
        pa_csv.ConvertOptions(column_types=dict.fromkeys(fields, pa.float64())),
    )


def _columns_from_csv(text: bytes, fields: list[str], n: int) -> dict[str, Column] | None:
    if n == 0:
        return _columns_from_replies([], fields)
    read, parse, convert = _csv_options(tuple(fields))
    try:
        table = pa_csv.read_csv(
            io.BytesIO(text), read_options=read, parse_options=parse, convert_options=convert
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != n:
        return None
    columns: dict[str, Column] = {}
    for name in fields:
        # Already float64: no cast, just the values (NaN where null) and the null mask.
        values = table.column(name)
        columns[name] = Column(
            np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64),
            np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool),
        )
    return columns


def _columns_from_replies(
    replies: Sequence[Sequence[bytes | None]], fields: list[str]
) -> dict[str, Column]:
    n = len(replies)
    columns: dict[str, Column] = {}
    for j, name in enumerate(fields):
        values = np.full(n, np.nan)
        missing = np.zeros(n, dtype=bool)
        for i, reply in enumerate(replies):
            raw = reply[j]
            if raw is None:
                missing[i] = True
                continue
            # An unreadable stored value stays NaN: the default applies, as on the online path.
            with contextlib.suppress(ValueError):
                values[i] = float(raw)
        columns[name] = Column(values, missing)
    return columns
