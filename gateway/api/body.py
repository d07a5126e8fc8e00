"""Request bodies read straight from ASGI ``receive``: bounded, then parsed as JSON once."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive

from gateway.errors import BodyTooLarge, ClientDisconnected, MalformedBody


async def read_body(receive: Receive, declared_length: bytes | str | None, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes, whatever ``Content-Length`` claims.

    A declared length over the limit is refused before a byte is read; uvicorn enforces no
    body limit, so chunked bodies are bounded while they stream in.
    """
    if declared_length is not None and declared_length.isdigit() and int(declared_length) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected("client closed the connection")
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
    if not message.get("more_body", False):
        return body  # nearly every request: one message, no copy
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("client closed the connection")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise MalformedBody("request body is empty", field="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MalformedBody(f"request body is not valid JSON: {e.msg}", field="body") from e


def parse_buffered_json(raw: bytes, limit: int) -> Any:
    """A body the server buffered whole: the same limit and errors as :func:`read_json`."""
    if len(raw) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes", field="body")
    return parse_json(raw)


async def read_json(receive: Receive, declared_length: bytes | str | None, limit: int) -> Any:
    return parse_json(await read_body(receive, declared_length, limit))
