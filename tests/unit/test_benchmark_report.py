"""The benchmark report's verdicts: a target is met only when every round meets it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.run import Target, paired, percentile_ms, round_figures, slice_seconds, verdict


def target(key: str, rounds: list[dict[str, float]]) -> Target:
    t = Target(key, f"({key})", "http://127.0.0.1:1", "", "hit", [], [], rounds=rounds)
    t.result = {name: sorted(r[name] for r in rounds)[len(rounds) // 2] for name in rounds[0]}
    return t


def figures(rps: float, cpu_ms: float = 0.5, p99_ms: float = 20.0) -> dict[str, float]:
    return {
        "rps": rps,
        "sat_requests": rps * 8,
        "sat_errors": 0,
        "sat_p50_ms": 5.0,
        "sat_p99_ms": 9.0,
        "cpu_ms_server": cpu_ms,
        "cpu_ms_stack": cpu_ms * 1.2,
        "wrk_cpu_s": 1.0,
        "other_cpu_s": 0.0,
        "cores_busy": 1.9,
        "fixed_rate": 500.0,
        "fixed_p50_ms": 3.0,
        "fixed_p99_ms": p99_ms,
        "fixed_errors": 0,
    }


def test_ratios_are_paired_round_by_round() -> None:
    num = target("c", [figures(900), figures(1200), figures(500)])
    den = target("a", [figures(1000), figures(1000), figures(1000)])
    assert paired(num, den, "rps") == [0.9, 1.2, 0.5]


@pytest.mark.parametrize(
    ("per_round", "expected"),
    [
        ([1.02, 1.10, 1.00], "yes"),
        ([0.95, 1.10, 1.04], "not in every round"),
        ([0.80, 1.10, 0.95], "no"),
    ],
)
def test_a_target_is_met_only_in_every_round(per_round: list[float], expected: str) -> None:
    assert verdict(per_round, lambda v: v >= 1.0) == expected


def test_the_report_shows_each_rounds_ratio_and_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "machine_header", lambda args, cache: ["- machine: test"])
    direct = target("a", [figures(5000, 0.25), figures(5000, 0.25), figures(4000, 0.25)])
    # The hit's median ratio (1.02) meets ">= 1.00"; its first round (0.90) does not.
    hit = target("c", [figures(4500, 0.3), figures(5100, 0.3), figures(4600, 0.3)])
    miss = target(
        "b", [figures(2600, p99_ms=20), figures(2700, p99_ms=9), figures(2000, p99_ms=12)]
    )
    reference = target("d", [figures(800, 1.8), figures(900, 1.8), figures(700, 1.8)])
    args = argparse.Namespace(duration=8, connections=32, rate=500, workers=2, rounds=3, slices=4)
    out = tmp_path / "report.md"
    run.write_report([direct, miss, hit, reference], args, out)
    text = out.read_text()
    assert "| (c)/(a) | 0.92 | 1.02 (0.90-1.15) |" in text
    assert "| (c)/(a) req/s >= 1.00 | 1.02 | 0.90, 1.02, 1.15 | not in every round |" in text
    assert "| (b)/(a) req/s >= 0.50 | 0.52 | 0.52, 0.54, 0.50 | yes |" in text
    p99 = "| miss p99 <= 10 ms at 500 req/s | 12.00 ms | 20.00 ms, 9.00 ms, 12.00 ms | no |"
    assert p99 in text
    # Each target's busy cores during its saturation run, after its other-CPU figure.
    assert text.count("| 0.0 | 1.90 |") == 4


def test_the_report_names_the_commit_it_measured(tmp_path: Path) -> None:
    import subprocess

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run.code_version(tmp_path) == f"`{head}`"
    (tmp_path / "f").write_text("2")
    assert run.code_version(tmp_path) == f"`{head}` plus uncommitted changes"
    assert run.code_version(tmp_path / "nowhere").startswith("unknown")


def test_percentiles_follow_wrks_rank_rule() -> None:
    # wrk: the smallest latency whose cumulative count reaches round(p / 100 * n + 0.5).
    histogram = [[300, 1], [100, 2], [200, 1]]  # four requests, in any order
    assert percentile_ms(histogram, 25) == 0.1  # rank round(1.5) = 2
    assert percentile_ms(histogram, 50) == 0.2  # rank round(2.5) = 3 (C rounds half up)
    assert percentile_ms(histogram, 75) == 0.3  # rank round(3.5) = 4
    assert percentile_ms(histogram, 99) == 0.3
    assert percentile_ms(histogram, 100) == 0.3
    assert percentile_ms([], 99) == 0.0


def test_merged_slices_give_the_percentiles_of_one_run() -> None:
    one_run = [[v, 1] for v in range(1000, 2000)]
    slices = [one_run[0::3], one_run[1::3], one_run[2::3]]
    merged = [pair for part in slices for pair in part]
    for p in (50, 90, 99):
        assert percentile_ms(merged, p) == percentile_ms(one_run, p)
    # A slow slice moves the merged p99 where one slow run of the same requests would.
    slow = [[20_000, 20]]
    assert percentile_ms(merged + slow, 99) == 20.0


def slice_(requests: int, rps: float, server_s: float, busy_s: float) -> dict[str, object]:
    return {
        "requests": requests,
        "runtime_s": requests / rps,
        "errors": 1,
        "histogram": [[1000, requests * 3 // 5], [3000, requests - requests * 3 // 5]],
        "server_s": server_s,
        "stack_s": server_s * 1.5,
        "wrk_s": 0.5,
        "busy_s": busy_s,
        "wall_s": 2.0,
    }


def test_a_round_sums_its_slices() -> None:
    fixed = {"achieved_rate": 499.0, "p50_ms": 1.5, "p99_ms": 4.0, "errors": 0}
    # A fast slice and a slow one: req/s over their joint run time, not the mean of the two.
    figures = round_figures([slice_(4000, 2000, 0.4, 3.8), slice_(1000, 500, 0.2, 3.0)], fixed)
    assert figures["rps"] == 5000 / 4.0
    assert figures["sat_requests"] == 5000
    assert figures["sat_errors"] == 2
    assert figures["cpu_ms_server"] == pytest.approx(0.6 / 5000 * 1000)
    assert figures["cpu_ms_stack"] == pytest.approx(0.9 / 5000 * 1000)
    assert figures["other_cpu_s"] == pytest.approx(6.8 - 0.9 - 1.0)
    assert figures["cores_busy"] == pytest.approx(6.8 / 4.0)
    assert figures["sat_p50_ms"] == 1.0
    assert figures["sat_p99_ms"] == 3.0
    assert figures["fixed_p99_ms"] == 4.0


@pytest.mark.parametrize(("duration", "slices", "seconds"), [(8, 4, 2), (8, 1, 8), (6, 3, 2)])
def test_slices_are_whole_seconds(duration: float, slices: int, seconds: int) -> None:
    assert slice_seconds(argparse.Namespace(duration=duration, slices=slices)) == seconds


@pytest.mark.parametrize(("duration", "slices"), [(8, 3), (2, 4), (8.5, 1)])
def test_slices_wrk_cannot_time_are_refused(duration: float, slices: int) -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        slice_seconds(argparse.Namespace(duration=duration, slices=slices))
