"""Run the real `tritonserver` from the nvidia-pytriton wheel as a subprocess (CPU, local).

Used by `python -m triton_launcher` (`make run`), the integration-test fixtures and benchmarks:

    with TritonServer(Path("model_repository")) as triton:
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_url)

The work directory holds the wheel's backends with the python-backend stub for this Python, the
repository adapted for the CPU runtime (see repository.py) and the server log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from triton_launcher.distribution import TritonDistribution
from triton_launcher.errors import ModelLoadError, TritonExitedEarly, TritonStartupTimeout
from triton_launcher.ports import free_port
from triton_launcher.repository import AdaptedRepository, adapt_repository

logger = logging.getLogger(__name__)

LOG_FILENAME: Final = "tritonserver.log"
_POLL_INTERVAL_S: Final = 0.1
_HTTP_TIMEOUT_S: Final = 2.0
_SHM_DIR: Final = Path("/dev/shm")


class TritonServer:
    """One local Triton server process; a context manager, restartable on the same ports.

    Ports given as 0 are picked once, at construction, so `stop()` + `start()` comes back on
    the same addresses (clients and the gateway keep their URLs across a restart).
    """

    _instances_started = 0  # makes shared-memory prefixes unique within this process

    def __init__(
        self,
        model_repository: Path,
        *,
        work_dir: Path | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
        cache_size_bytes: int = 0,
        log_verbose: int = 0,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
        gpu: bool = False,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        distribution: TritonDistribution | None = None,
    ) -> None:
        self.model_repository = Path(model_repository)
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.cache_size_bytes = cache_size_bytes
        self.log_verbose = log_verbose
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        # Keep the models' KIND_GPU instances (a machine with a GPU); otherwise they run on CPU.
        self.gpu = gpu
        self.extra_env = dict(env or {})
        self.extra_args = list(extra_args)
        self._distribution = distribution
        self._given_work_dir = Path(work_dir) if work_dir is not None else None
        self._work_dir: Path | None = None
        self._repository: AdaptedRepository | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[int], TritonServer] | None = None
        self._log_offset = 0
        TritonServer._instances_started += 1
        self._shm_prefix = f"triton_launcher_{os.getpid()}_{TritonServer._instances_started}_"

    # -- addresses -------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        """`host:port`, the form tritonclient.grpc expects."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise RuntimeError("the work directory is prepared by start()")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        return self.work_dir / LOG_FILENAME

    @property
    def repository(self) -> AdaptedRepository:
        """The adapted repository Triton serves (which models were adapted, and how)."""
        if self._repository is None:
            raise RuntimeError("the repository is adapted by start()")
        return self._repository

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def prepare(self) -> Path:
        """Create the work dir: backends with the python stub, adapted repository. Idempotent."""
        if self._work_dir is not None:
            return self._work_dir
        distribution = self._distribution or TritonDistribution.locate()
        distribution.check()  # clear errors for a missing binary or stub, before any copying
        self._distribution = distribution
        if self._given_work_dir is not None:
            work_dir = self._given_work_dir
            work_dir.mkdir(parents=True, exist_ok=True)
            # A reused work dir gets a fresh copy: stale adapted configs would be served.
            for stale in ("backends", "model_repository"):
                shutil.rmtree(work_dir / stale, ignore_errors=True)
        else:
            work_dir = Path(tempfile.mkdtemp(prefix="triton-launcher-"))
        try:
            backends = work_dir / "backends"
            # Backends are copied, not shared: the stub for this Python goes inside them.
            shutil.copytree(distribution.backends_dir, backends)
            shutil.copy2(
                distribution.python_stub(), backends / "python" / "triton_python_backend_stub"
            )
            self._repository = adapt_repository(
                self.model_repository, work_dir / "model_repository", gpu=self.gpu
            )
        except BaseException:
            if self._given_work_dir is None:
                shutil.rmtree(work_dir, ignore_errors=True)
            raise
        self._work_dir = work_dir
        return work_dir

    def command(self) -> list[str]:
        """The tritonserver command line (after prepare())."""
        assert self._distribution is not None, "prepare() first"
        args = [
            str(self._distribution.binary),
            f"--model-repository={self.work_dir / 'model_repository'}",
            f"--backend-directory={self.work_dir / 'backends'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            # GPU metrics come from DCGM, which the wheel's build cannot reach in a sandbox
            # or on a CPU machine: they would only add errors to the log.
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            # Keep serving when a model fails to load, so start() can ask Triton *why*
            # (repository index) instead of parsing a log of a dead process.
            "--exit-on-error=false",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s))}",
            f"--log-verbose={self.log_verbose}",
            # Unique shared-memory names: several servers (tests, gateway, bench) may run at once.
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if self.cache_size_bytes > 0:
            args += [
                f"--cache-directory={self._distribution.caches_dir}",
                f"--cache-config=local,size={self.cache_size_bytes}",
            ]
        return args + self.extra_args

    def environment(self) -> dict[str, str]:
        assert self._distribution is not None, "prepare() first"
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = _prepend(
            str(self._distribution.libs_dir), env.get("LD_LIBRARY_PATH")
        )
        # The python-backend stub finds its packages through the `python` on PATH: put this
        # interpreter's (the venv's) bin first, or models cannot import numpy/onnxruntime.
        env["PATH"] = _prepend(str(Path(sys.executable).parent), env.get("PATH"))
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start Triton and wait until it is ready; raise a TritonLaunchError if it is not."""
        if self.is_running:
            return
        self.prepare()
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                self.command(),
                env=self.environment(),
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: stop() signals the server and its python-backend stubs.
                start_new_session=True,
            )
        # Safety net if the owner forgets stop() or the interpreter exits with Triton up.
        self._finalizer = weakref.finalize(self, _kill_group, self._process.pid)
        try:
            self._wait_ready()
        except BaseException:
            # Keep the work dir so the log the error points at still exists; stop() removes it.
            self._stop_process(self.stop_timeout_s + 5)
            raise
        logger.info(
            "Triton ready in %.1f s: grpc %s, http %s, metrics %s (log %s)",
            time.monotonic() - started,
            self.grpc_url,
            self.http_url,
            self.metrics_url,
            self.log_path,
        )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                raise TritonExitedEarly(exit_code, self.log_path, self.log_tail())
            status = _http_status(f"{self.http_url}/v2/health/ready")
            if status == 200:
                return
            if status is not None:
                # Endpoints open only after the initial load, so a model that is not READY
                # now has failed: report Triton's own reason.
                failed = {
                    name: reason
                    for name, (state, reason) in self.model_states().items()
                    if state not in ("READY", "LOADING")
                }
                if failed:
                    raise ModelLoadError(failed, self.log_path)
            if time.monotonic() > deadline:
                raise TritonStartupTimeout(self.startup_timeout_s, self.log_path, self.log_tail())
            time.sleep(_POLL_INTERVAL_S)

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL after the timeout. Idempotent.

        A temporary work dir is removed; the next start() prepares a new one.
        """
        self._stop_process(timeout_s if timeout_s is not None else self.stop_timeout_s + 5)
        if self._given_work_dir is None and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            self._repository = None

    def _stop_process(self, timeout: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if timeout > 0:
                    logger.warning("tritonserver did not stop in %.0f s; killing it", timeout)
            # Stubs orphaned by a crash or a kill would keep CPU and shared memory.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        # Regions of stubs that were killed rather than stopped are never unlinked otherwise.
        for region in _SHM_DIR.glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL at once, like a crash (fault injection); otherwise the same as stop().

        A graceful stop() takes ~4 s even when idle: Triton drains in 1 s polling steps.
        """
        self.stop(timeout_s=0)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- introspection ---------------------------------------------------------------------
    def model_states(self) -> dict[str, tuple[str, str]]:
        """Model name -> (state, reason) from Triton's repository index (latest version)."""
        request = urllib.request.Request(
            f"{self.http_url}/v2/repository/index",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S) as response:
                index = json.loads(response.read())
        except (OSError, ValueError):
            return {}
        states: dict[str, tuple[str, str]] = {}
        for entry in index:
            states[str(entry["name"])] = (
                str(entry.get("state", "")),
                str(entry.get("reason", "")),
            )
        return states

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines this run wrote to the server log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _prepend(entry: str, current: str | None) -> str:
    return f"{entry}{os.pathsep}{current}" if current else entry


def _http_status(url: str) -> int | None:
    """HTTP status of GET url, or None if nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pgid, sig)


def _kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)
