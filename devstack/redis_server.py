"""Run a private redis-server (Debian's ``redis-server``) on a chosen or free port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from triton_launcher.ports import free_port


class RedisStartError(RuntimeError):
    pass


class RedisServer:
    """A throw-away Redis: no persistence, loopback only, its own data dir.

    ``stop()`` then ``start()`` restarts it on the same port (fault-injection tests).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        password: str | None = None,
        binary: str = "redis-server",
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self._binary = binary
        self._timeout_s = startup_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        path = shutil.which(self._binary)
        if path is None:
            raise RedisStartError(
                f"{self._binary!r} not found on PATH; install it with "
                "`apt-get install -y redis-server` (or run `make setup`)"
            )
        args = [
            path,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        log = (self._dir / "redis.log").open("ab")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited with {self._process.returncode}: {self.log_tail()}"
                )
            if self._answers_ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisStartError(f"redis-server not answering on port {self.port}: {self.log_tail()}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown (no save, connections reset)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        path = self._dir / "redis.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
