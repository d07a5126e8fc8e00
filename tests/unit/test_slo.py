"""loadtests/slo.py and loadtests/shapes.py: the pure parts of the Locust SLO gate and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.shaping import parse_duration, ramp_tick, step_tick
from loadtests.slo import (
    DEFAULT_SLO_FILE,
    Breach,
    Limits,
    Observed,
    Slo,
    evaluate,
    format_report,
    load_slo,
    parse_slo,
    required_types,
    with_overrides,
)


def obs(name: str, requests: int = 100, failures: int = 0, p50=5.0, p95=10.0, p99=20.0) -> Observed:
    return Observed(name, requests, failures, p50, p95, p99)


def test_shipped_slo_file_loads_and_lists_every_request_type_of_both_users() -> None:
    slo = load_slo(DEFAULT_SLO_FILE)

    rest = {"predict:hit", "predict:miss", "predict:batch", "features:push"}
    grpc = {"grpc:predict:hit", "grpc:predict:miss", "grpc:predict:batch"}
    assert set(slo.requests) == rest | grpc
    assert slo.default.max_error_ratio == pytest.approx(0.01)
    assert slo.limits_for("predict:hit").p99_ms == 200
    assert slo.limits_for("something:else").p99_ms == slo.default.p99_ms


def test_within_limits_has_no_breach() -> None:
    slo = parse_slo({"default": {"p99_ms": 50, "max_error_ratio": 0.01}})

    assert evaluate([obs("predict:hit"), obs("predict:miss")], slo) == []


def test_each_broken_threshold_is_reported_per_type() -> None:
    slo = parse_slo(
        {
            "default": {"p50_ms": 10, "p99_ms": 100, "max_error_ratio": 0.01},
            "requests": {"predict:hit": {"p99_ms": 15}},
        }
    )

    breaches = evaluate(
        [obs("predict:hit", p99=16.0), obs("predict:miss", failures=2, p50=11.0)], slo
    )

    assert breaches == [
        Breach("predict:hit", "p99_ms", 16.0, 15.0),
        Breach("predict:miss", "p50_ms", 11.0, 10.0),
        Breach("predict:miss", "max_error_ratio", 0.02, 0.01),
    ]
    assert str(breaches[0]) == "SLO BREACH predict:hit: p99 16 ms > limit 15 ms"
    assert str(breaches[2]) == "SLO BREACH predict:miss: error ratio 0.02 > limit 0.01"


def test_a_listed_type_without_requests_is_a_breach_unless_disabled() -> None:
    raw = {"requests": {"predict:batch": {"p99_ms": 100}}}

    assert evaluate([obs("predict:hit")], parse_slo(raw)) == [
        Breach("predict:batch", "requests", 0, 1)
    ]
    assert evaluate([obs("predict:hit")], parse_slo({**raw, "require_listed": False})) == []


def test_listed_types_the_run_does_not_send_are_not_required() -> None:
    # one SLO file for REST-only, gRPC-only and mixed runs, and for --push-ratio 0
    slo = parse_slo(
        {"requests": {"predict:hit": {}, "features:push": {}, "grpc:predict:hit": {"p99_ms": 1}}}
    )
    rest_only = {"predict:hit", "predict:miss"}

    assert required_types(slo, rest_only) == ["predict:hit"]
    assert required_types(slo) == ["features:push", "grpc:predict:hit", "predict:hit"]
    assert evaluate([obs("predict:hit")], slo, rest_only) == []
    assert evaluate([obs("predict:hit")], slo, {"predict:hit", "features:push"}) == [
        Breach("features:push", "requests", 0, 1)
    ]
    # limits still apply to whatever did run
    assert evaluate([obs("grpc:predict:hit", p99=2.0)], slo, {"grpc:predict:hit"}) == [
        Breach("grpc:predict:hit", "p99_ms", 2.0, 1.0)
    ]
    assert required_types(parse_slo({"require_listed": False, "requests": {"a": {}}})) == []


def test_flag_overrides_apply_to_every_type() -> None:
    slo = parse_slo({"default": {"p99_ms": 100}, "requests": {"predict:hit": {"p99_ms": 50}}})

    tightened = with_overrides(slo, Limits(p99_ms=1.0))

    assert tightened.limits_for("predict:hit").p99_ms == 1.0
    assert tightened.limits_for("other").p99_ms == 1.0
    assert with_overrides(slo, Limits()).limits_for("predict:hit").p99_ms == 50


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"default": {"p98_ms": 1}}, "unknown key"),
        ({"default": {"p99_ms": -1}}, "non-negative number"),
        ({"default": {"p99_ms": "fast"}}, "non-negative number"),
        ({"gates": {}}, "unknown key"),
    ],
)
def test_bad_slo_file_is_rejected(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_slo(raw)


def test_report_marks_broken_cells(tmp_path: Path) -> None:
    slo = parse_slo({"requests": {"predict:hit": {"p99_ms": 0.001}}})
    observed = [obs("predict:hit"), obs("predict:miss")]

    report = format_report(observed, slo, evaluate(observed, slo))

    hit_line = next(line for line in report.splitlines() if line.startswith("predict:hit"))
    assert "20 (0.001)!" in hit_line
    assert hit_line.endswith("BREACH")
    assert next(x for x in report.splitlines() if x.startswith("predict:miss")).endswith("ok")
    assert Slo().limits_for("x") == Limits()


def test_shapes() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45s") == parse_duration("45") == 45
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    assert ramp_tick(5, 50, 10, 60) == (50, 10)
    assert ramp_tick(60, 50, 10, 60) is None
    assert [step_tick(t, 50, 10, 300, 20, 30)[0] for t in (0, 29, 30, 61, 200)] == [  # type: ignore[index]
        20,
        20,
        40,
        50,
        50,
    ]
    assert step_tick(300, 50, 10, 300, 20, 30) is None
