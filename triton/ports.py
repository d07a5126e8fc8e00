"""Free TCP port helper for tests, benchmarks and `port=0` in the launcher."""

from __future__ import annotations

import collections
import socket

_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1024)
"""Ports this process handed out lately. Each probe socket is closed before the next is bound,
so the kernel may hand the same port out twice in a row: tritonserver then got one port for
HTTP and metrics and refused to start (seen in CI)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and that this process has not handed out lately (the
    OS picks it; another process may still race us)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port
    raise OSError(f"no free port on {host} that this process has not handed out already")
