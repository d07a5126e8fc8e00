"""The app's lifespan freezes the start-up heap once it is ready to serve (gateway/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from devstack.redis_server import RedisServer
from gateway.app import create_app
from gateway.config import AuthSettings, RedisSettings, Settings, TritonSettings
from tests.integration.conftest import SPEC_PATH
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def settings(redis_server: RedisServer, triton_server: TritonServer, *, freeze: bool) -> Settings:
    return Settings(
        spec_path=SPEC_PATH,
        http_host="127.0.0.1",
        grpc_port=free_port(),
        redis=RedisSettings(url=redis_server.url),
        triton=TritonSettings(url=triton_server.grpc_url),
        auth=AuthSettings(enabled=False),
        gc_freeze=freeze,
    )


@pytest.mark.parametrize("freeze", [True, False])
async def test_lifespan_freezes_the_heap_only_when_asked(
    redis_server: RedisServer, triton_server: TritonServer, unfrozen: None, freeze: bool
) -> None:
    app = create_app(settings(redis_server, triton_server, freeze=freeze))
    async with app.router.lifespan_context(app) as state:
        assert state["service"] is not None
        service_tracked = any(o is state["service"] for o in gc.get_objects())
        assert (gc.get_freeze_count() > 0) is freeze
        # The service, built during start-up, is frozen with the rest of start-up's heap.
        assert service_tracked is not freeze
