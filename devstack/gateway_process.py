"""Run ``python -m gateway serve`` as a subprocess: the real CLI, server and transport.

Auth is on, as in production: unless given a keys file, each process gets a keys file of its
own with one freshly minted key for every model (``api_key``, ``headers``, ``grpc_metadata``).
``auth=False`` turns access control off explicitly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from devstack.processes import terminate
from gateway.keys import mint, write_keys_file
from triton_launcher.ports import free_port


class GatewayStartError(RuntimeError):
    pass


class GatewayProcess:
    def __init__(
        self,
        *,
        spec_path: Path,
        redis_url: str,
        triton_url: str,
        port: int = 0,
        grpc_port: int = 0,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        wait_for: str = "/readyz",
        startup_timeout_s: float = 60.0,
        cwd: Path | None = None,
        auth: bool = True,
        keys_file: Path | None = None,
        api_key: str | None = None,
    ) -> None:
        self.port = port or free_port()
        # Each gateway gets its own gRPC port: with SO_REUSEPORT two gateways on one port
        # would silently share (and split) the traffic.
        self.grpc_port = grpc_port or free_port()
        self.api_key = api_key
        """The key this harness calls with (minted here when no keys file is given)."""
        self._keys_dir: Path | None = None
        if auth and keys_file is None:
            self._keys_dir = Path(tempfile.mkdtemp(prefix="gw-keys-"))
            keys_file = self._keys_dir / "keys.yaml"
            self.api_key, entry = mint("devstack", ["*"])
            write_keys_file(keys_file, [entry])
        self.keys_file = keys_file
        auth_env = {"GATEWAY_AUTH__ENABLED": "true" if auth else "false"}
        if keys_file is not None:
            auth_env["GATEWAY_AUTH__KEYS_FILE"] = str(keys_file)
        self._env = {
            **os.environ,
            "GATEWAY_SPEC_PATH": str(spec_path),
            "GATEWAY_HTTP_HOST": "127.0.0.1",
            "GATEWAY_HTTP_PORT": str(self.port),
            "GATEWAY_GRPC_PORT": str(self.grpc_port),
            "GATEWAY_WORKERS": str(workers),
            "GATEWAY_REDIS__URL": redis_url,
            "GATEWAY_TRITON__URL": triton_url,
            **auth_env,
            **(env or {}),
        }
        self._wait_for = wait_for
        self._timeout_s = startup_timeout_s
        self._cwd = cwd
        """Working directory; ``python -m gateway`` imports the ``gateway`` package found there
        first (benchmarks run other checkouts this way)."""
        self._log = Path(tempfile.mkstemp(prefix="gw-gateway-", suffix=".log")[1])
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers carrying ``api_key`` (empty without one)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """gRPC call metadata carrying ``api_key`` (empty without one)."""
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> GatewayProcess:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self._cwd,
            )
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(self.url + self._wait_for, timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise GatewayStartError(f"gateway not ready after {self._timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL as a last resort; returns the exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        return terminate(process, timeout_s)

    def wait(self, timeout_s: float) -> int:
        """Wait for the process to exit on its own (e.g. after a SIGTERM sent via ``pid``)."""
        assert self._process is not None, "not started"
        return self._process.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)
        if self._keys_dir is not None:
            shutil.rmtree(self._keys_dir, ignore_errors=True)
