"""create_app(settings) → FastAPI. The lifespan owns every I/O client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from gateway.api.fastpath import GatewayApp, PredictFastPath
from gateway.api.grpc import SERVICE_NAME, serve_grpc
from gateway.api.grpc_guard import GuardInterceptor
from gateway.api.middleware import install_guard
from gateway.api.openapi import install_openapi
from gateway.api.problems import install_problem_handlers
from gateway.api.rest import router
from gateway.breaker import CircuitBreaker
from gateway.config import Settings
from gateway.guard import Guard
from gateway.heap import freeze_startup_heap
from gateway.service import PredictionService
from gateway.spec import load_specs
from gateway.startup import verify_models
from gateway.store import RedisStore, open_redis
from gateway.telemetry.grpc import TelemetryInterceptor
from gateway.telemetry.http import HttpTelemetry, install_telemetry
from gateway.telemetry.lifespan import telemetry_running
from gateway.triton import TritonClient


class State(TypedDict):
    service: PredictionService


def create_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """``tracer_provider``: tests pass an SDK provider; otherwise ``OTEL_*`` decide."""
    # The spec is read here, not in the lifespan, so a bad file fails before binding ports.
    specs = load_specs(settings.spec_path)
    # Likewise the API keys: auth on without a valid keys file stops start-up here.
    guard = Guard.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with (
            open_redis(settings.redis) as redis_client,
            TritonClient(settings.triton) as triton,
            guard.running(),
            telemetry_running(tracer_provider),
        ):
            versions = await verify_models(
                specs, triton, url=settings.triton.url, wait_s=settings.triton.startup_wait_s
            )
            store = RedisStore(
                redis_client,
                breaker=CircuitBreaker(
                    "redis",
                    failure_threshold=settings.redis.breaker_failures,
                    open_s=settings.redis.breaker_open_s,
                ),
            )
            service = PredictionService(
                specs,
                versions,
                store,
                triton,
                tick_batching=settings.tick_batching,
                infer_window_s=settings.infer_window_ms / 1000,
                write_back_window_s=settings.write_back_window_ms / 1000,
            )
            try:
                # gRPC runs in this event loop and shares the service (and so every client).
                telemetry = TelemetryInterceptor(
                    SERVICE_NAME, specs, slow_request_s=settings.slow_request_s
                )
                guarded = GuardInterceptor(guard, SERVICE_NAME)
                async with serve_grpc(settings, service, [telemetry, guarded]):
                    if settings.gc_freeze:
                        freeze_startup_heap()
                    yield {"service": service}
            finally:
                try:
                    await service.drain()
                finally:
                    # The pipelined lookup connection is closed even if draining failed.
                    await store.aclose()

    app = GatewayApp(
        title="Triton inference gateway",
        version="0.1.0",
        summary="Schema-checked, cache-first online predictions in front of NVIDIA Triton.",
        lifespan=lifespan,
        # gateway.telemetry owns spans and metrics; FastAPI's native OpenTelemetry would add
        # a second server span per request, and its per-request provider check costs CPU.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.include_router(router)
    install_problem_handlers(app)
    install_guard(app, guard, settings)
    install_openapi(app, auth=guard.keyring is not None)
    telemetry = HttpTelemetry(
        models=specs, routes=app.router.routes, slow_request_s=settings.slow_request_s
    )
    # Last, so outermost: it sees every answer, the guard's included.
    install_telemetry(app, telemetry)
    # Predict requests skip FastAPI altogether; the same telemetry and guard run inline.
    app.fast_path = PredictFastPath(
        guard=guard, telemetry=telemetry, max_body_bytes=settings.max_body_bytes
    )
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker runs: each worker builds its settings from the env."""
    return create_app(Settings())
