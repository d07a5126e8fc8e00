"""`python -m triton_launcher`: run the local Triton (CPU) until Ctrl-C or SIGTERM.

    python -m triton_launcher --model-repository model_repository \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from triton_launcher.errors import TritonLaunchError
from triton_launcher.launcher import TritonServer

logger = logging.getLogger("triton_launcher")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m triton_launcher",
        description="Run NVIDIA Triton from the nvidia-pytriton wheel, serving a production "
        "model repository (onnxruntime models via the python-backend adapter), on CPU or with "
        "--gpu on the GPU.",
    )
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1", help="address the endpoints bind to")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="kept after exit (default: a temp dir)"
    )
    parser.add_argument(
        "--cache-size-bytes", type=int, default=0, help="response cache size; 0 turns it off"
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="keep the models' KIND_GPU instances and run them on the GPU (default: CPU)",
    )
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--startup-timeout-s", type=float, default=120.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = TritonServer(
        args.model_repository,
        work_dir=args.work_dir,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        host=args.host,
        cache_size_bytes=args.cache_size_bytes,
        log_verbose=args.log_verbose,
        startup_timeout_s=args.startup_timeout_s,
        gpu=args.gpu,
    )
    stopping = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    # This process owns the signals; Triton runs in its own process group and is stopped by us.
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    try:
        server.start()
    except TritonLaunchError as e:
        logger.error("%s", e)
        server.stop()
        return 1
    try:
        print(f"Triton ready: grpc {server.grpc_url}", flush=True)
        print(f"              http {server.http_url}", flush=True)
        print(f"              metrics {server.metrics_url}", flush=True)
        print(f"              models {', '.join(server.repository.model_names)}", flush=True)
        print(f"              log {server.log_path}", flush=True)
        while not stopping.wait(timeout=1.0):
            if not server.is_running:
                logger.error("tritonserver exited unexpectedly:\n%s", server.log_tail())
                return 1
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
