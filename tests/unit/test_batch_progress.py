"""Progress line and summary: formatting, TTY vs log output, exit status."""

from __future__ import annotations

import io

import orjson
import pytest

from gateway.batch.checkpoint import Failure
from gateway.batch.progress import Progress, format_duration, progress_line
from gateway.batch.report import Summary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "--"), (float("inf"), "--"), (0.4, "0s"), (42, "42s"), (185, "3m05s"), (3720, "1h02m")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_progress_line_shows_done_rate_eta_and_failures() -> None:
    line = progress_line("fraud_scorer 0/4", 12_288, 200_000, 20_000.0, 3)
    assert line == ("fraud_scorer 0/4  12,288/200,000  6.1%  20,000/s  ETA 9s  failed 3")
    assert "ETA --" in progress_line("m", 0, 10, 0.0, 0)
    assert "[############------------]" in progress_line("m", 5, 10, 1.0, 0, bar=True)


def test_log_mode_writes_a_line_every_interval_and_a_last_one() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress("m", stream=out, interval_s=5, clock=clock)
    progress.begin(100, done=40)
    assert progress.mode == "log"
    clock.now += 1
    progress.advance(10)  # too soon: nothing written
    clock.now += 5
    progress.advance(10)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    # rate counts this run only (20 entities in 6 s), not the 40 done before
    assert lines[0] == "m  60/100  60.0%  3/s  ETA 12s  failed 0"
    assert lines[1].startswith("m  60/100")


def test_tty_mode_redraws_in_place() -> None:
    clock, out = Clock(), Terminal()
    progress = Progress("m", stream=out, clock=clock)
    progress.begin(10)
    assert progress.mode == "tty"
    clock.now += 1
    progress.advance(5, failed=1)
    progress.close()
    text = out.getvalue()
    assert text.startswith("\rm  [")
    assert "\x1b[K" in text
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "failed 1" in text


def test_a_phase_without_a_total_is_noted_and_excluded_from_the_rate() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress("m 0/2", stream=out, interval_s=5, clock=clock)
    clock.now += 6
    progress.note("snapshot: 4,000 keys scanned, 2,000 entities of this shard")
    clock.now += 60  # the snapshot took a minute: not part of the scoring rate
    progress.begin(2000)
    clock.now += 1
    progress.advance(1000)
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "m 0/2  snapshot: 4,000 keys scanned, 2,000 entities of this shard",
        "m 0/2  1,000/2,000  50.0%  1,000/s  ETA 1s  failed 0",
    ]


def test_off_mode_is_silent() -> None:
    out = io.StringIO()
    progress = Progress("m", stream=out, mode="off")
    progress.begin(10)
    progress.note("snapshot: 5 keys scanned")
    progress.advance(10)
    progress.close()
    assert out.getvalue() == ""


def summary(**changes: object) -> Summary:
    fields: dict[str, object] = {
        "job_id": "fraud_scorer-v1-abc",
        "model": "fraud_scorer",
        "version": "1",
        "source": "cards.csv",
        "shard": "0/1",
        "outcome": "complete",
        "entities": 1000,
        "scored": 600,
        "skipped": 398,
        "invalid": 2,
        "failed": 0,
        "elapsed_s": 2.0,
        "prepare_s": 0.5,
        "job_scored": 998,
        "job_invalid": 2,
        "job_failed": 0,
        "failures": [Failure("card-7", "amount must be finite")],
    }
    fields.update(changes)
    return Summary(**fields)  # type: ignore[arg-type]


def test_summary_text_names_counts_rate_and_failures() -> None:
    text = summary().text()
    assert "scored             600  this run" in text
    assert "skipped            398  already done by an earlier run" in text
    assert "failed               2  this run (2 invalid input, 0 on dependency errors)" in text
    assert "301 entities/s" in text
    assert "card-7: amount must be finite" in text
    assert "exit status 1" in text


def test_summary_json_is_machine_readable() -> None:
    body = orjson.loads(orjson.dumps(summary().as_dict()))
    assert body["scored"] == 600
    assert body["skipped"] == 398
    assert body["job"] == {"scored": 998, "invalid": 2, "stale": 0, "failed": 0}
    assert body["rate_per_s"] == 301.0
    assert body["failures"] == [{"entity": "card-7", "reason": "amount must be finite"}]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"job_invalid": 0, "invalid": 0, "failures": []}, 0),
        ({"job_invalid": 0, "outcome": "nothing-to-do"}, 0),
        ({}, 1),  # invalid rows are failures
        ({"job_invalid": 0, "job_failed": 1024}, 1),
        ({"job_invalid": 0, "outcome": "interrupted"}, 1),
        # too old for the freshness policy: a policy outcome, not a failure
        ({"job_invalid": 0, "invalid": 0, "failures": [], "stale": 5, "job_stale": 5}, 0),
    ],
)
def test_exit_status_is_zero_only_when_every_entity_is_scored(
    changes: dict[str, object], status: int
) -> None:
    assert summary(**changes).exit_status == status


def test_nothing_to_do_says_so() -> None:
    text = summary(outcome="nothing-to-do", scored=0, job_invalid=0, failures=[]).text()
    assert "nothing left to do" in text


def test_stale_entities_are_their_own_outcome_in_text_and_json() -> None:
    stale = summary(scored=590, stale=10, job_stale=10)
    text = stale.text()
    assert "stale               10  this run, not scored: features older than" in text
    assert "job total: 998 scored, 2 invalid, 10 stale, 0 failed (to retry)" in text
    body = stale.as_dict()
    assert body["stale"] == 10
    assert body["job"]["stale"] == 10
    assert "stale" not in summary().text()  # only shown when there are any


def test_a_scan_snapshot_suggests_building_the_index() -> None:
    assert "reindex-features" in summary(snapshot="scan").text()
    assert "reindex-features" not in summary(snapshot="index").text()
    assert summary(snapshot="index").as_dict()["snapshot"] == "index"
