"""create_app(settings) → FastAPI. The lifespan owns every I/O client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI

from gateway.api.grpc import serve_grpc
from gateway.api.problems import install_problem_handlers
from gateway.api.rest import router
from gateway.config import Settings
from gateway.service import PredictionService
from gateway.spec import load_specs
from gateway.startup import verify_models
from gateway.store import RedisStore, open_redis
from gateway.triton import TritonClient


class State(TypedDict):
    service: PredictionService


def create_app(settings: Settings) -> FastAPI:
    # The spec is read here, not in the lifespan, so a bad file fails before binding ports.
    specs = load_specs(settings.spec_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with (
            open_redis(settings.redis) as redis_client,
            TritonClient(settings.triton) as triton,
        ):
            versions = await verify_models(
                specs, triton, url=settings.triton.url, wait_s=settings.triton.startup_wait_s
            )
            service = PredictionService(specs, versions, RedisStore(redis_client), triton)
            try:
                # gRPC runs in this event loop and shares the service (and so every client).
                async with serve_grpc(settings, service):
                    yield {"service": service}
            finally:
                await service.drain()

    app = FastAPI(
        title="Triton inference gateway",
        version="0.1.0",
        summary="Schema-checked, cache-first online predictions in front of NVIDIA Triton.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(router)
    install_problem_handlers(app)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker runs: each worker builds its settings from the env."""
    return create_app(Settings())
