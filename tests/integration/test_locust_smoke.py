"""A short Locust run of loadtests/ against the local stack, and the SLO gate that fails it.

Bounded: a few seconds of load from 10 users, only 127.0.0.1, each run capped at 60 s.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.conftest import DEMO_FEATURES, ROOT, SPEC_PATH

pytestmark = pytest.mark.integration

REST_TYPES = ("predict:hit", "predict:miss", "predict:batch", "features:push")
GRPC_TYPES = ("grpc:predict:hit", "grpc:predict:miss", "grpc:predict:batch")


@pytest.fixture(scope="module")
def loaded_gateway(redis_server: RedisServer, gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    env = {
        **os.environ,
        "GATEWAY_REDIS__URL": redis_server.url,
        "GATEWAY_SPEC_PATH": str(SPEC_PATH),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "load-features", "--model", "fraud_scorer",
         "--file", str(DEMO_FEATURES)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # locust (a subprocess) reads the gateway's API key from the environment.
    with pytest.MonkeyPatch.context() as env_patch:
        env_patch.setenv("GATEWAY_API_KEY", gateway.api_key or "")
        yield gateway


def run_locust(gateway: GatewayProcess, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Both user classes unless ``extra`` names some (Locust's class selection, at the end).

    A gRPC deadline is a hard cut on the client (REST waits for the gateway's own 1 s budget
    and its ladder): gRPC gets the smoke gate's loose p99 as deadline, so load on the shared
    box shows up as latency, not as failed calls.
    """
    locust = Path(sys.executable).with_name("locust")
    return subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py", "--headless", "-u", "10", "-r", "10",
         "-t", "4s", "--host", gateway.url, "--grpc-target", gateway.grpc_target,
         "--grpc-deadline-ms", "2000",
         "--csv", str(out / "run"), "--html", str(out / "report.html"), "--only-summary",
         *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def stats_rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "run_stats.csv").open(newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def test_smoke_run_passes_the_gate(loaded_gateway: GatewayProcess, tmp_path: Path) -> None:
    # The 2-core CI box also runs Redis, Triton, the gateway and other suites: latency there
    # says nothing about a release, so the smoke run gates on errors and a loose p99 (the
    # shipped loadtests/slo.yaml is the release gate; test_impossible_slo proves it bites).
    slo_file = tmp_path / "smoke-slo.yaml"
    listed = "".join(f'  "{name}": {{}}\n' for name in (*REST_TYPES, *GRPC_TYPES))
    slo_file.write_text(
        "require_listed: true\ndefault: {p99_ms: 2000, max_error_ratio: 0.0}\n"
        f"requests:\n{listed}"
    )
    # RestUser and GrpcUser (5 users each); pushes doubled so a 4 s run surely has some
    result = run_locust(
        loaded_gateway,
        tmp_path,
        "--push-ratio",
        "0.1",
        "--slo-allow-cpu-saturation",
        "--slo-file",
        str(slo_file),
    )

    assert result.returncode == 0, result.stderr[-4000:]
    assert "SLO gate: passed" in result.stderr
    rows = stats_rows(tmp_path)
    for name in (*REST_TYPES, *GRPC_TYPES):
        assert int(rows[name]["Request Count"]) > 0, rows.get(name)
        assert int(rows[name]["Failure Count"]) == 0, rows[name]
    assert rows["features:push"]["Type"] == "PUT"
    assert {rows[name]["Type"] for name in GRPC_TYPES} == {"grpc"}
    assert (tmp_path / "report.html").stat().st_size > 0


def test_impossible_slo_fails_the_run_and_names_the_threshold(
    loaded_gateway: GatewayProcess, tmp_path: Path
) -> None:
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text('requests:\n  "grpc:predict:hit": {p99_ms: 0.001}\n  "predict:hit": {}\n')

    # gRPC users only (warmed up over gRPC): the REST type listed in the file is not required
    result = run_locust(loaded_gateway, tmp_path, "--slo-file", str(slo_file), "GrpcUser")

    assert result.returncode == 1, result.stderr[-4000:]
    assert "SLO BREACH grpc:predict:hit: p99" in result.stderr
    assert "> limit 0.001 ms" in result.stderr
    assert "SLO BREACH predict:hit" not in result.stderr
    assert "not sent by this run's users, not required: predict:hit" in result.stderr
    assert "SLO gate: FAILED" in result.stderr
    rows = stats_rows(tmp_path)
    assert set(rows) == {*GRPC_TYPES, "Aggregated"}
    assert all(int(rows[name]["Failure Count"]) == 0 for name in GRPC_TYPES), rows


def test_step_shape_is_used_when_its_module_is_loaded(
    loaded_gateway: GatewayProcess, tmp_path: Path
) -> None:
    locust = Path(sys.executable).with_name("locust")
    result = subprocess.run(
        [str(locust), "-f", "loadtests/locustfile.py,loadtests/shapes.py", "--headless",
         "--shape", "step", "--step-users", "3", "--step-time", "1s", "-u", "6", "-r", "10",
         "-t", "3s", "--host", loaded_gateway.url, "--only-summary", "--slo-file", "",
         "--slo-allow-cpu-saturation", "--skip-warmup", "RestUser"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-4000:]
    assert "Shape test updating to 3 users" in result.stderr
    assert "Shape test updating to 6 users" in result.stderr
