"""benchmarks.gpu_triton's own checks against a real Triton (CPU instance): the score check,
the statistics it reads, and its report; and benchmarks.gpu.probe's transport check. The GPU
rows need a GPU machine (docs/gpu.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from benchmarks import gpu_triton
from benchmarks.gpu import probe
from benchmarks.run import ROOT
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration


def test_scores_and_statistics_of_a_cpu_instance(tmp_path: Path) -> None:
    with TritonServer(ROOT / "model_repository", startup_timeout_s=120) as server:
        before = gpu_triton.model_stats(server.http_url)
        error = gpu_triton.max_error(server.http_url)
        after = gpu_triton.model_stats(server.http_url)

    assert error <= 1e-5
    # One request of 256 rows: one more execution (or a few, were it split) and 256 inferences.
    assert after["inferences"] - before["inferences"] == 256
    assert after["success"] - before["success"] == 1
    assert 1 <= after["executions"] - before["executions"] <= 256
    assert after["compute_ns"] > before["compute_ns"]


def test_report_lists_every_run_and_the_score_check() -> None:
    args = argparse.Namespace(threads=4, duration=8.0)
    row = {
        "kind": "gpu",
        "runs_on": "torch on NVIDIA H200 (cuda:0)",
        "rows": 64,
        "connections": 32,
        "rps": 1000.0,
        "rows_per_s": 64000.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 0,
        "triton_cpu_ms_per_req": 0.2,
        "rows_per_execution": 128.0,
        "compute_us_per_execution": 150.0,
        "queue_us_per_request": 300.0,
        "gpu": "40% / 1200 MiB",
        "startup_s": 5.0,
        "max_error": 1e-7,
    }

    text = gpu_triton.report([row, {**row, "kind": "cpu", "runs_on": "onnxruntime CPU"}], args)

    assert "| gpu | torch on NVIDIA H200 (cuda:0) | 64 | 32 | 1,000 | 64,000 | 1.00 / 2.00 |" in (
        text
    )
    assert "| cpu | onnxruntime CPU |" in text
    assert "- gpu: ready in 5.0 s (warm-up included)" in text
    assert "max |score - onnxruntime CPU| over 256 rows 1.0e-07" in text


def test_probe_gets_back_the_values_it_sent(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe.main(["--label", "ci"]) == 0

    line = capsys.readouterr().out.strip()
    assert line.startswith("ci | python 3.")
    assert f"numpy {np.__version__}" in line
    assert line.endswith("| ok")


def test_probe_says_what_came_back_when_it_is_wrong() -> None:
    assert probe.verdict(200, {"OUT": [0.0] * 16, "SEEN": [0.0] * 16}).startswith("WRONG")
    assert probe.verdict(500, "output tensor shape does not match") == (
        "WRONG: HTTP 500, output tensor shape does not match"
    )
    right = {"OUT": [v * 2 + 1 for v in probe.VALUES], "SEEN": list(probe.VALUES)}
    assert probe.verdict(200, right) == "ok"
