"""A REST request held in flight on purpose: headers and part of the body sent, the rest later.

A body over 64 KiB (JSON padded with leading whitespace) takes uvicorn's own path, which starts
the app (and the gateway's guard counts the request) once the headers are in; the request
then waits for its body. That makes "N requests in flight" exact and deterministic, for
overload and graceful-shutdown tests, with no sleep-based timing.

With ``admitted_at_headers=False`` the body stays small, so the predict fast path
(``gateway.api.http_protocol``) takes it: nothing runs, and the guard counts nothing, until the
whole body is in.
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

import orjson

FAST_PATH_MAX_BODY = 65_536
"""The largest body the predict fast path buffers (uvicorn's read high-water mark)."""


class HeldRequest:
    def __init__(
        self,
        port: int,
        path: str,
        body: Any,
        headers: dict[str, str],
        *,
        admitted_at_headers: bool = True,
    ) -> None:
        self._body = orjson.dumps(body)
        if admitted_at_headers:
            self._body = b" " * FAST_PATH_MAX_BODY + self._body
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(self._body)}")
        self._sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + self._body[:5])

    def finish(self) -> tuple[int, dict[str, str], Any]:
        """Send the rest of the body; (status, headers, decoded body) of the answer."""
        self._sock.sendall(self._body[5:])
        response = http.client.HTTPResponse(self._sock)
        response.begin()
        raw = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        self._sock.close()
        return response.status, headers, orjson.loads(raw) if raw else None

    def close(self) -> None:
        self._sock.close()
