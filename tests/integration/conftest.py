"""Session fixtures: a real redis-server, a real tritonserver and the real gateway process.

settings → stack (redis, triton) → gateway (``python -m gateway serve``) → clients.
Everything listens on free loopback ports and is torn down at the end of the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from triton_launcher.launcher import TritonServer

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "config/models.yaml"
MODEL_REPOSITORY = ROOT / "model_repository"
DEMO_FEATURES = ROOT / "data/demo/card_features.csv"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def triton_server() -> Iterator[TritonServer]:
    with TritonServer(MODEL_REPOSITORY) as server:
        yield server


@pytest.fixture(scope="session")
def gateway(redis_server: RedisServer, triton_server: TritonServer) -> Iterator[GatewayProcess]:
    with GatewayProcess(
        spec_path=SPEC_PATH, redis_url=redis_server.url, triton_url=triton_server.grpc_url
    ) as process:
        yield process


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    # Carries the gateway's API key: auth is on, as in production.
    with httpx.Client(base_url=gateway.url, timeout=10.0, headers=gateway.headers) as http:
        yield http


@pytest.fixture
def kv(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client to arrange and inspect what the gateway reads and writes."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def wait_until(condition: Callable[[], object], timeout_s: float = 5.0) -> object:
    """Poll for an effect the gateway produces after answering (cache write-back)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s}s")
