"""``python -m gateway load-features`` writes validated features, or nothing at all."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from devstack.redis_server import RedisServer
from tests.integration.conftest import DEMO_FEATURES, ROOT, SPEC_PATH

pytestmark = pytest.mark.integration


def run_cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GATEWAY_REDIS__URL": redis_url, "GATEWAY_SPEC_PATH": str(SPEC_PATH)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "load-features", "--model", "fraud_scorer", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_loads_the_demo_data_set(redis_server: RedisServer, kv: redis.Redis) -> None:
    result = run_cli(redis_server.url, "--file", str(DEMO_FEATURES))

    assert result.returncode == 0, result.stderr
    assert "loaded 10000 entities" in result.stdout
    stored = kv.hgetall("gw:f:card:card-000042")
    assert set(stored) >= {b"amount", b"account_age_days", b"_ts"}
    line = next(x for x in DEMO_FEATURES.read_text().splitlines() if x.startswith("card-000042,"))
    header = DEMO_FEATURES.read_text().splitlines()[0].split(",")
    assert float(stored[b"amount"]) == pytest.approx(float(line.split(",")[header.index("amount")]))
    # every loaded entity is in the namespace's id index (written in the same script call)
    ids = [row.split(",", 1)[0] for row in DEMO_FEATURES.read_text().splitlines()[1:]]
    assert None not in kv.zmscore("gw:fi:card", ids)


def test_bad_file_is_rejected_and_writes_nothing(
    tmp_path: Path, redis_server: RedisServer, kv: redis.Redis
) -> None:
    first, second = f"card-l{uuid.uuid4().hex[:10]}", f"card-l{uuid.uuid4().hex[:10]}"
    bad = tmp_path / "bad.csv"
    bad.write_text(f"card_id,amount,hour_of_day\n{first},10.5,3\n{second},12.0,31\n")

    result = run_cli(redis_server.url, "--file", str(bad))

    assert result.returncode == 2
    assert "row 2, column 'hour_of_day'" in result.stderr
    assert "nothing was written" in result.stderr
    assert kv.exists(f"gw:f:card:{first}") == 0
    assert kv.zscore("gw:fi:card", first) is None


def test_unknown_column_is_rejected(tmp_path: Path, redis_server: RedisServer) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("card_id,amount,shoe_size\ncard-1,10.5,42\n")

    result = run_cli(redis_server.url, "--file", str(bad))

    assert result.returncode == 2
    assert "unknown column(s) ['shoe_size']" in result.stderr
