"""The benchmark report's verdicts: a target is met only when every round meets it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.run import Target, paired, verdict


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
    args = argparse.Namespace(duration=8, connections=32, rate=500, workers=2, rounds=3)
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
