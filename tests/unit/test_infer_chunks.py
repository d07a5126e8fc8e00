"""The rows of one tick batch go to Triton in calls of at most the model's max_batch_size; a
request's rows already in flight are not sent again."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from gateway.errors import InferenceTimeout
from gateway.service import PredictionService
from gateway.spec import ModelSpec, load_specs
from gateway.store import RedisStore
from gateway.triton import InferenceResult, TritonClient

SPEC_PATH = Path(__file__).resolve().parents[2] / "config" / "models.yaml"


class DoublingTriton:
    """Scores each row as twice its first column; records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.first_columns: list[list[float]] = []

    async def infer_packed(
        self,
        spec: Any,
        version: str,
        raw: bytes,
        shape: tuple[int, ...],
        *,
        timeout_s: float | None = None,
    ) -> InferenceResult:
        rows = np.frombuffer(raw, dtype="<f4").reshape(shape)
        self.calls.append(len(rows))
        self.first_columns.append(rows[:, 0].tolist())
        return InferenceResult(scores=rows[:, :1] * 2, model_version=version)


def parts(sizes: list[int], width: int) -> list[tuple[bytes, int, float | None]]:
    start, out = 0, []
    for n in sizes:
        rows = np.zeros((n, width), dtype=np.float32)
        rows[:, 0] = np.arange(start, start + n)
        out.append((rows.tobytes(), n, None))
        start += n
    return out


async def test_a_batch_over_max_batch_size_is_split_and_answered_in_order() -> None:
    spec = dataclasses.replace(load_specs(SPEC_PATH)["fraud_scorer"], max_batch_size=4)
    triton = DoublingTriton()
    service = PredictionService(
        {spec.name: spec},
        {spec.name: "1"},
        cast(RedisStore, None),  # not reached: only the Triton side is exercised
        cast(TritonClient, triton),
    )
    width = len(spec.features)
    scored = await service._infer_many((spec.name, "1"), parts([3, 2, 1, 4, 1], width))
    # Parts are never split: 3 | 2+1 | 4 | 1.
    assert triton.calls == [3, 3, 4, 1]
    expected = [
        [[2.0 * r] for r in range(a, b)] for a, b in [(0, 3), (3, 5), (5, 6), (6, 10), (10, 11)]
    ]
    assert [rows for rows, _ in scored] == expected
    assert {version for _, version in scored} == {"1"}
    # One part alone is one call.
    triton.calls.clear()
    assert (await service._infer_many((spec.name, "1"), parts([2], width)))[0][0] == [[0.0], [2.0]]
    assert triton.calls == [2]


async def test_only_the_rows_not_in_flight_go_to_triton_and_each_gets_its_own_score() -> None:
    spec = load_specs(SPEC_PATH)["fraud_scorer"]
    triton = DoublingTriton()
    service = PredictionService(
        {spec.name: spec}, {spec.name: "1"}, cast(RedisStore, None), cast(TritonClient, triton)
    )
    rows = np.zeros((4, len(spec.features)), dtype=np.float32)
    rows[:, 0] = [1, 2, 3, 4]
    keys: list[Any] = [(spec.name, "1", entity, 0.0) for entity in ["a", "a", "c", "a"]]
    # Rows 1 and 3 repeat row 0's key: they follow its call, and only rows 0 and 2 are sent.
    results = await service._infer_coalesced(spec, "1", rows.tobytes(), keys, None)
    assert triton.first_columns == [[1.0, 3.0]]
    assert results == [((2.0,), "1", True), ((2.0,), "1", False), ((6.0,), "1", True),
                       ((2.0,), "1", False)]  # fmt: skip


class SilentTriton:
    """Never answers (a Triton that hangs): only the callers' deadlines end their waits."""

    async def infer_packed(self, *args: Any, **kwargs: Any) -> InferenceResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _one_row(triton: Any, value: float) -> tuple[ModelSpec, PredictionService, bytes, Any]:
    """A service over ``triton``, one row of ``value``s, and that row's flight key."""
    spec = load_specs(SPEC_PATH)["fraud_scorer"]
    service = PredictionService(
        {spec.name: spec}, {spec.name: "1"}, cast(RedisStore, None), cast(TritonClient, triton)
    )
    row = np.full((1, len(spec.features)), value, dtype=np.float32).tobytes()
    return spec, service, row, (spec.name, "1", "a", 0.0)


async def test_one_row_in_flight_is_followed_not_sent_again() -> None:
    triton = DoublingTriton()
    spec, service, row, key = _one_row(triton, 5.0)
    lead, follow = await asyncio.gather(
        service._infer_one(spec, "1", row, key, None),
        service._infer_one(spec, "1", row, key, None),
    )
    assert triton.first_columns == [[5.0]]
    assert lead == ((10.0,), "1", True)
    assert follow == ((10.0,), "1", False)
    assert len(service._flight) == 0


async def test_a_leader_and_its_follower_each_stop_at_their_deadline() -> None:
    spec, service, row, key = _one_row(SilentTriton(), 0.0)
    now = time.monotonic()
    outcomes = await asyncio.gather(
        service._infer_one(spec, "1", row, key, now + 0.05),
        service._infer_one(spec, "1", row, key, now + 0.1),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [InferenceTimeout, InferenceTimeout]
    assert time.monotonic() - now < 1.0
    calls = list(service._inferences._calls)  # the call Triton never answers
    for call in calls:
        call.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


class SlowDoublingTriton(DoublingTriton):
    async def infer_packed(self, *args: Any, **kwargs: Any) -> InferenceResult:
        await asyncio.sleep(0.1)
        return await super().infer_packed(*args, **kwargs)


async def test_a_follower_gets_the_score_after_its_leader_gave_up() -> None:
    # The leader owns its part of the Triton call and stops waiting at its deadline; the
    # call goes on, and the request that follows its row still gets the score.
    triton = SlowDoublingTriton()
    spec, service, row, key = _one_row(triton, 4.0)
    now = time.monotonic()
    leader, follower = await asyncio.gather(
        service._infer_one(spec, "1", row, key, now + 0.03),
        service._infer_one(spec, "1", row, key, now + 2.0),
        return_exceptions=True,
    )
    assert isinstance(leader, InferenceTimeout)
    assert follower == ((8.0,), "1", False)
    assert triton.calls == [1]
    assert len(service._flight) == 0


class FirstCallHeldTriton(DoublingTriton):
    """Holds its first call until ``release`` is set; answers the others at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.started = 0

    async def infer_packed(self, *args: Any, **kwargs: Any) -> InferenceResult:
        self.started += 1
        if self.started == 1:
            await self.release.wait()
        return await super().infer_packed(*args, **kwargs)


async def test_a_miss_waits_for_the_call_in_flight_at_most_half_its_deadline() -> None:
    """A model's call is out (Triton holds it) and the window is 10 s: a miss with 120 ms
    left waits at most 60 ms for that call to end, then goes in a call of its own."""
    triton = FirstCallHeldTriton()
    spec = load_specs(SPEC_PATH)["fraud_scorer"]
    service = PredictionService(
        {spec.name: spec},
        {spec.name: "1"},
        cast(RedisStore, None),
        cast(TritonClient, triton),
        infer_window_s=10.0,
    )
    width = len(spec.features)
    row = np.full((1, width), 1.0, dtype=np.float32).tobytes()
    hurried_row = np.full((1, width), 3.0, dtype=np.float32).tobytes()
    first = asyncio.ensure_future(
        service._infer_one(spec, "1", row, (spec.name, "1", "a", 0.0), None)
    )
    await asyncio.sleep(0.01)
    assert triton.started == 1  # the first call is out
    start = time.monotonic()
    hurried = await service._infer_one(
        spec, "1", hurried_row, (spec.name, "1", "b", 0.0), start + 0.12
    )
    elapsed = time.monotonic() - start
    assert hurried == ((6.0,), "1", True)
    assert 0.04 <= elapsed < 0.11, elapsed
    assert not first.done()
    triton.release.set()
    assert await first == ((2.0,), "1", True)
    assert triton.first_columns == [[3.0], [1.0]]
