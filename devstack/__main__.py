"""``python -m devstack``: Redis + Triton + gateway on this machine, demo features loaded.

Access control is on, as in production: each start mints a fresh development API key into
``.run/devstack/keys.yaml`` (hash only) and prints the key; it is also in
``.run/devstack/api-key`` for scripts (``export GATEWAY_API_KEY=$(cat .run/devstack/api-key)``).
``--no-auth`` runs without access control, and says so loudly.

Ctrl-C (or SIGTERM) stops all three: uvicorn handles the signal and drains the gateway,
then Triton and Redis are stopped in reverse order of starting.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

from devstack.redis_server import RedisServer, RedisStartError
from gateway.config import AuthSettings, RedisSettings, Settings, TritonSettings
from gateway.keys import mint, write_keys_file
from triton_launcher.errors import TritonLaunchError
from triton_launcher.launcher import TritonServer

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / ".run/devstack"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="gateway HTTP port")
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument("--triton-http-port", type=int, default=18000)
    parser.add_argument("--triton-grpc-port", type=int, default=18001)
    parser.add_argument("--triton-metrics-port", type=int, default=18002)
    parser.add_argument("--spec", type=Path, default=ROOT / "config/models.yaml")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--demo-data", type=Path, default=ROOT / "data/demo/card_features.csv")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--no-auth", action="store_true", help="run WITHOUT API keys (local experiments only)"
    )
    args = parser.parse_args(argv)

    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default action the
    # process would die before the finally block stops Triton and Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    started = time.perf_counter()
    redis = RedisServer(args.redis_port)
    triton = TritonServer(
        args.model_repository,
        http_port=args.triton_http_port,
        grpc_port=args.triton_grpc_port,
        metrics_port=args.triton_metrics_port,
    )
    try:
        print(f"starting redis-server on 127.0.0.1:{redis.port} ...", flush=True)
        redis.start()
        print(f"starting tritonserver (gRPC {triton.grpc_url}) ...", flush=True)
        triton.start()
        settings = Settings(
            spec_path=args.spec,
            http_host="127.0.0.1",
            http_port=args.port,
            workers=args.workers,
            redis=RedisSettings(url=redis.url),
            triton=TritonSettings(url=triton.grpc_url),
            auth=_dev_auth(args.no_auth),
        )
        asyncio.run(_load_demo(settings, args.demo_data))
        _print_banner(settings, time.perf_counter() - started)
        from gateway.__main__ import serve_forever

        return serve_forever(settings)
    except (RedisStartError, TritonLaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping triton and redis ...", flush=True)
        triton.stop()
        redis.close()


def _dev_auth(disabled: bool) -> AuthSettings:
    """A fresh key for every model (the previous dev key stops working), or auth off."""
    if disabled:
        return AuthSettings(enabled=False)
    keys_file = WORK_DIR / "keys.yaml"
    key, entry = mint("devstack", ["*"])
    write_keys_file(keys_file, [entry])
    key_file = WORK_DIR / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    # /docs stays usable in a browser ("Authorize" takes the key); /openapi.json is public.
    return AuthSettings(keys_file=keys_file, public_docs=True)


async def _load_demo(settings: Settings, path: Path) -> None:
    from gateway.batch.index import reindex_features
    from gateway.ingest import load_features
    from gateway.spec import load_specs
    from gateway.store import RedisStore, open_redis

    spec = load_specs(settings.spec_path)["fraud_scorer"]
    async with open_redis(settings.redis) as client:
        report = await load_features(RedisStore(client), spec, path)
        # Marks the id index complete, so `batch-score --source feature-store` reads it
        # instead of falling back to SCAN (docs/batch-scoring.md).
        await reindex_features(client, spec.entity_namespace)
    print(f"loaded {report.entities} demo entities from {path.name}", flush=True)


def _print_banner(settings: Settings, elapsed_s: float) -> None:
    url = f"http://127.0.0.1:{settings.http_port}"
    if settings.auth.enabled:
        key = (WORK_DIR / "api-key").read_text().strip()
        auth_header = f"-H 'Authorization: Bearer {key}' "
        auth_note = (
            f"API key (every model, this run only): {key}\n"
            f"  also in {WORK_DIR / 'api-key'}: "
            "export GATEWAY_API_KEY=$(cat .run/devstack/api-key)\n"
        )
    else:
        auth_header = ""
        auth_note = (
            "!!! ACCESS CONTROL IS DISABLED (--no-auth): anyone who reaches these ports can "
            "call every model !!!\n"
        )
    print(
        f"""
stack up in {elapsed_s:.1f}s (gateway starting) — gateway: {url}   docs: {url}/docs
  gRPC   127.0.0.1:{settings.grpc_port} (gateway.v1.Gateway; reflection on)
  redis  {settings.redis.url}    triton gRPC {settings.triton.url}

{auth_note}
try:
  curl -s -X POST {url}/v1/models/fraud_scorer/predict {auth_header}\\
       -H 'content-type: application/json' \\
       -d '{{"entity_id": "card-000042", "features": {{"amount": 912.5, "is_online": true}}}}'
  curl -s -X POST {url}/v1/models/fraud_scorer/predict {auth_header}\\
       -H 'content-type: application/json' -d '{{"entity_id": "card-000042"}}'

Ctrl-C stops gateway, triton and redis.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
