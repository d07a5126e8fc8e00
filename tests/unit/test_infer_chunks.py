"""The rows of one tick batch go to Triton in calls of at most the model's max_batch_size."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from gateway.service import PredictionService
from gateway.spec import load_specs
from gateway.store import RedisStore
from gateway.triton import InferenceResult, TritonClient

SPEC_PATH = Path(__file__).resolve().parents[2] / "config" / "models.yaml"


class DoublingTriton:
    """Scores each row as twice its first column; records the rows of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def infer(
        self, spec: Any, version: str, rows: npt.NDArray[Any], *, timeout_s: float | None = None
    ) -> InferenceResult:
        self.calls.append(len(rows))
        return InferenceResult(scores=rows[:, :1] * 2, model_version=version)


def parts(sizes: list[int], width: int) -> list[tuple[npt.NDArray[np.float32], float | None]]:
    start, out = 0, []
    for n in sizes:
        rows = np.zeros((n, width), dtype=np.float32)
        rows[:, 0] = np.arange(start, start + n)
        out.append((rows, None))
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
