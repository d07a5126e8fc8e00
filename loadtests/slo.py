"""SLO gate for Locust runs: per-request-type latency percentiles and error ratio.

Locust has no percentile gate of its own. ``register(events)`` adds ``--slo-*`` options and an
``events.quitting`` listener that evaluates ``environment.stats`` per request name, prints a
table and every broken threshold, and sets ``environment.process_exit_code = 1`` on a breach or
when the load generator was CPU-saturated (its numbers are then not trustworthy).

The evaluation itself (``load_slo``, ``evaluate``, ``format_report``) is pure and unit-tested.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SLO_FILE = Path(__file__).resolve().parent / "slo.yaml"
PERCENTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
LIMIT_KEYS = (*PERCENTILES, "max_error_ratio")


@dataclass(frozen=True)
class Limits:
    """Upper bounds for one request type; ``None`` means not checked."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_error_ratio: float | None = None

    def merged(self, other: Limits) -> Limits:
        """``other``'s set values win over ours."""
        return replace(self, **{k: v for k, v in other.__dict__.items() if v is not None})


@dataclass(frozen=True)
class Slo:
    default: Limits = field(default_factory=Limits)
    requests: Mapping[str, Limits] = field(default_factory=dict)
    # request types that must have been exercised: a listed type with no requests is a breach
    require_listed: bool = True

    def limits_for(self, name: str) -> Limits:
        return self.default.merged(self.requests.get(name, Limits()))


@dataclass(frozen=True)
class Observed:
    """What one request type did during the run (latencies in ms)."""

    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Breach:
    name: str
    check: str
    observed: float
    limit: float

    def __str__(self) -> str:
        if self.check == "requests":
            return f"SLO BREACH {self.name}: no requests were made (the SLO file lists it)"
        unit = "" if self.check == "max_error_ratio" else " ms"
        label = "error ratio" if self.check == "max_error_ratio" else self.check.removesuffix("_ms")
        return (
            f"SLO BREACH {self.name}: {label} {self.observed:.4g}{unit} "
            f"> limit {self.limit:.4g}{unit}"
        )


def _limits(raw: Mapping[str, Any] | None, where: str) -> Limits:
    raw = raw or {}
    unknown = set(raw) - set(LIMIT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {list(LIMIT_KEYS)}")
    values: dict[str, float] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{where}.{key}: expected a non-negative number, got {value!r}")
        values[key] = float(value)
    return Limits(**values)


def parse_slo(raw: Mapping[str, Any] | None) -> Slo:
    """Build an ``Slo`` from the YAML structure (see loadtests/slo.yaml)."""
    raw = raw or {}
    unknown = set(raw) - {"default", "requests", "require_listed"}
    if unknown:
        raise ValueError(f"SLO file: unknown key(s) {sorted(unknown)}")
    requests = raw.get("requests") or {}
    if not isinstance(requests, Mapping):
        raise ValueError("SLO file: 'requests' must map request names to limits")
    return Slo(
        default=_limits(raw.get("default"), "default"),
        requests={str(n): _limits(v, f"requests.{n}") for n, v in requests.items()},
        require_listed=bool(raw.get("require_listed", True)),
    )


def load_slo(path: Path | str) -> Slo:
    with Path(path).open() as fh:
        return parse_slo(yaml.safe_load(fh))


def with_overrides(slo: Slo, overrides: Limits) -> Slo:
    """Command-line limits apply to every request type, over the file's values."""
    return Slo(
        default=slo.default.merged(overrides),
        requests={n: lim.merged(overrides) for n, lim in slo.requests.items()},
        require_listed=slo.require_listed,
    )


def required_types(slo: Slo, sent: Collection[str] | None = None) -> list[str]:
    """Listed types that must have requests: those the run's mix sends (``sent``; all when
    unknown). One SLO file serves REST-only, gRPC-only and mixed runs that way."""
    if not slo.require_listed:
        return []
    return sorted(n for n in slo.requests if sent is None or n in sent)


def evaluate(
    observed: Iterable[Observed], slo: Slo, sent: Collection[str] | None = None
) -> list[Breach]:
    """Every broken threshold, in request-name order.

    ``sent``: the request names the run's user classes send with a non-zero weight.
    """
    by_name = {o.name: o for o in observed}
    breaches: list[Breach] = []
    if slo.require_listed:
        for name in required_types(slo, sent):
            if by_name.get(name) is None or by_name[name].requests == 0:
                breaches.append(Breach(name, "requests", 0, 1))
    for name in sorted(by_name):
        obs, limits = by_name[name], slo.limits_for(name)
        if obs.requests == 0:
            continue
        for key in PERCENTILES:
            limit = getattr(limits, key)
            if limit is not None and getattr(obs, key) > limit:
                breaches.append(Breach(name, key, getattr(obs, key), limit))
        if limits.max_error_ratio is not None and obs.error_ratio > limits.max_error_ratio:
            breaches.append(
                Breach(name, "max_error_ratio", obs.error_ratio, limits.max_error_ratio)
            )
    return breaches


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_report(observed: Iterable[Observed], slo: Slo, breaches: Iterable[Breach]) -> str:
    broken = {(b.name, b.check) for b in breaches}
    header = (
        f"{'request type':<20} {'reqs':>7} {'err%':>6}  "
        f"{'p50 ms (slo)':>15} {'p95 ms (slo)':>15} {'p99 ms (slo)':>15}  verdict"
    )
    lines = ["SLO gate", header, "-" * len(header)]
    for obs in sorted(observed, key=lambda o: o.name):
        lim = slo.limits_for(obs.name)
        cells = [
            f"{_fmt(getattr(obs, k))} ({_fmt(getattr(lim, k))})"
            + ("!" if (obs.name, k) in broken else "")
            for k in PERCENTILES
        ]
        err_mark = "!" if (obs.name, "max_error_ratio") in broken else ""
        ok = not any(name == obs.name for name, _ in broken)
        lines.append(
            f"{obs.name:<20} {obs.requests:>7} {100 * obs.error_ratio:>5.2f}{err_mark or ' '} "
            f"{cells[0]:>15} {cells[1]:>15} {cells[2]:>15}  {'ok' if ok else 'BREACH'}"
        )
    return "\n".join(lines)


# --- Locust wiring -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SLO gate (loadtests/slo.py)")
    group.add_argument(
        "--slo-file",
        default=str(DEFAULT_SLO_FILE),
        help="YAML file with per-request-type limits; '' disables the file (default: %(default)s)",
    )
    for key in PERCENTILES:
        flag = key.removesuffix("_ms")
        group.add_argument(
            f"--slo-{flag}", type=float, default=None, help=f"{flag} limit in ms for every type"
        )
    group.add_argument(
        "--slo-max-error-ratio", type=float, default=None, help="max failures/requests per type"
    )
    group.add_argument(
        "--slo-allow-cpu-saturation",
        action="store_true",
        default=False,
        help="do not fail a run whose load generator went above 90%% CPU",
    )
    group.add_argument(
        "--slo-off", action="store_true", default=False, help="disable the SLO gate entirely"
    )


def slo_from_options(options: argparse.Namespace) -> Slo:
    slo = load_slo(options.slo_file) if options.slo_file else Slo()
    return with_overrides(
        slo,
        Limits(
            p50_ms=options.slo_p50,
            p95_ms=options.slo_p95,
            p99_ms=options.slo_p99,
            max_error_ratio=options.slo_max_error_ratio,
        ),
    )


def observed_from_stats(stats: Any) -> list[Observed]:
    """One ``Observed`` per request name (methods merged), from ``environment.stats``."""
    from locust.stats import StatsEntry

    merged: dict[str, StatsEntry] = {}
    for (name, method), entry in stats.entries.items():
        if name not in merged:
            merged[name] = StatsEntry(stats, name, method, use_response_times_cache=False)
        merged[name].extend(entry)
    return [
        Observed(
            name=name,
            requests=e.num_requests,
            failures=e.num_failures,
            p50_ms=float(e.get_response_time_percentile(0.50) or 0),
            p95_ms=float(e.get_response_time_percentile(0.95) or 0),
            p99_ms=float(e.get_response_time_percentile(0.99) or 0),
        )
        for name, e in merged.items()
    ]


def cpu_saturated(runner: Any) -> bool:
    """Locust sets these when its own (or a worker's) CPU went above 90%."""
    return bool(
        getattr(runner, "cpu_warning_emitted", False)
        or getattr(runner, "worker_cpu_warning_emitted", False)
    )


def register(events: Any, sent: Callable[[Any], Collection[str]] | None = None) -> None:
    """Add the options and the gate. ``sent(environment)``: the request names the selected
    user classes send; listed types outside it are not required (None: every listed type)."""

    @events.init_command_line_parser.add_listener
    def _(parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)

    @events.init.add_listener
    def _(environment: Any, **_kwargs: Any) -> None:
        # fail fast on a bad SLO file, before any load is generated
        options = environment.parsed_options
        if options is not None and not options.slo_off:
            try:
                slo_from_options(options)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                print(f"SLO gate: bad SLO configuration: {exc}", file=sys.stderr, flush=True)
                sys.exit(2)

    @events.quitting.add_listener
    def _(environment: Any, **_kwargs: Any) -> None:
        from locust.runners import WorkerRunner

        options = environment.parsed_options
        if options is None or options.slo_off or isinstance(environment.runner, WorkerRunner):
            return
        slo = slo_from_options(options)
        observed = observed_from_stats(environment.stats)
        sent_names = None if sent is None else sent(environment)
        breaches = evaluate(observed, slo, sent_names)
        out = [format_report(observed, slo, breaches), *map(str, breaches)]
        if skipped := sorted(set(required_types(slo)) - set(required_types(slo, sent_names))):
            out.append(f"not sent by this run's users, not required: {', '.join(skipped)}")
        failed = bool(breaches)
        if cpu_saturated(environment.runner):
            if options.slo_allow_cpu_saturation:
                out.append("warning: load generator CPU went above 90% (allowed by flag)")
            else:
                out.append(
                    "SLO BREACH load generator: CPU went above 90% during the run; its latency "
                    "numbers are not trustworthy (fewer users per process, --processes, or "
                    "--slo-allow-cpu-saturation)"
                )
                failed = True
        out.append("SLO gate: FAILED" if failed else "SLO gate: passed")
        print("\n".join(out), file=sys.stderr, flush=True)
        if failed:
            environment.process_exit_code = 1
        elif not getattr(environment.runner, "exceptions", None):
            # within the SLO's error ratio: failed requests alone do not fail the run
            # (exceptions in the locustfile still do, through Locust's own exit code)
            environment.process_exit_code = 0
