"""The queue delay a benchmark serves the model with, and the figures
``benchmarks.queue_delay`` derives from Triton's statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.queue_delay import queue_figures
from benchmarks.run import ROOT, queue_delay_us, set_queue_delay, without_queue_policy
from triton_launcher.repository import parse_config


def test_the_copy_batches_with_the_delay_asked_for_and_nothing_else_changes(
    tmp_path: Path,
) -> None:
    shipped = parse_config((ROOT / "model_repository/fraud_scorer/config.pbtxt").read_text())
    copy = without_queue_policy(ROOT / "model_repository", tmp_path)
    set_queue_delay(copy, 750)

    served = parse_config((copy / "fraud_scorer/config.pbtxt").read_text())
    assert served.dynamic_batching.max_queue_delay_microseconds == 750
    assert queue_delay_us(copy) == 750
    assert queue_delay_us(ROOT / "model_repository") == (
        shipped.dynamic_batching.max_queue_delay_microseconds
    )
    # The queue policy goes, as in benchmarks.run; the rest is the shipped config.
    assert not served.dynamic_batching.HasField("default_queue_policy")
    served.dynamic_batching.max_queue_delay_microseconds = (
        shipped.dynamic_batching.max_queue_delay_microseconds
    )
    shipped.dynamic_batching.ClearField("default_queue_policy")
    assert served == shipped
    assert (copy / "fraud_scorer/1/model.onnx").read_bytes() == (
        ROOT / "model_repository/fraud_scorer/1/model.onnx"
    ).read_bytes()


def test_a_config_without_a_delay_to_set_is_refused(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    (repository / "m").mkdir(parents=True)
    (repository / "m/config.pbtxt").write_text('name: "m"\nmax_batch_size: 8\n')
    with pytest.raises(ValueError, match="max_queue_delay_microseconds"):
        set_queue_delay(repository, 0)


def test_figures_are_per_request_and_per_execution_between_two_readings() -> None:
    # Two readings of benchmarks.gpu_triton.model_stats (Triton's cumulative counters).
    def stats(count: int, ns: int, executions: int, rows: int) -> dict[str, float]:
        return {"success": count, "queue_ns": ns, "executions": executions, "inferences": rows}

    before = stats(100, 9_000_000, 40, 700)
    after = stats(400, 189_000_000, 140, 1_500)

    figures = queue_figures(before, after)
    assert figures.queue_us_per_request == pytest.approx(600.0)  # 180 ms over 300 requests
    assert figures.rows_per_execution == pytest.approx(8.0)
    assert figures.requests_per_execution == pytest.approx(3.0)


def test_no_traffic_between_readings_gives_zeros_not_a_division_error() -> None:
    same = {"success": 5.0, "queue_ns": 1_000.0, "executions": 2.0, "inferences": 10.0}
    figures = queue_figures(same, same)
    assert (figures.queue_us_per_request, figures.rows_per_execution) == (0.0, 0.0)
