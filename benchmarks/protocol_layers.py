"""``python -m benchmarks.protocol_layers``: CPU of the HTTP protocol around a predict request.

``GatewayHttpProtocol`` (uvicorn's httptools protocol with predict requests handed straight
to the fast path) and, as the baseline, a bare httptools protocol (headers collected, a task
per request, one write), both given the same keep-alive predict request and answering it with
the same fixed answer at once. No sockets: the bytes go straight into ``data_received`` and
the answer into a transport that only counts writes, so what is timed is the protocol's own
Python (parsing callbacks, routing to the fast path, the task, the answer's head), steady to
a few tenths of a microsecond, in one process on uvloop. End-to-end runs on this shared box
cannot resolve changes of a few microseconds (docs/measurements.md); this can.

Prints the median (and minimum) of ``--rounds`` rounds of ``--requests`` requests each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
import uvicorn
import uvloop
from uvicorn.server import ServerState

from benchmarks.fastpath_layers import print_medians
from gateway.api.http_protocol import GatewayHttpProtocol

Header = tuple[bytes, bytes]
MODEL = "fraud_scorer"
BODY = b'{"entity_id":"card-000001"}'
REQUEST = (
    f"POST /v1/models/{MODEL}/predict HTTP/1.1\r\n"
    "Host: 127.0.0.1:8080\r\n"
    "Content-Type: application/json\r\n"
    "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode() + BODY
ANSWER_BODY = b"x" * 200
ANSWER_HEADERS: list[Header] = [
    (b"content-type", b"application/json"),
    (b"content-length", b"%d" % len(ANSWER_BODY)),
    (b"x-prediction-source", b"cache"),
]


class CountingTransport(asyncio.Transport):
    """Takes the answer's bytes and counts the writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self._closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class FixedAnswer:
    """What the protocol hands a predict request to: answers at once."""

    max_body_bytes = 65_536

    def serves(self, model: str) -> bool:
        return model == MODEL

    async def serve(
        self,
        scope: Any,
        body: bytes,
        model: str,
        respond: Callable[[int, list[Header], bytes], Awaitable[None]],
    ) -> None:
        await respond(200, ANSWER_HEADERS, ANSWER_BODY)


class App:
    fast_path = FixedAnswer()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("every request here is a predict request")


class BareProtocol(asyncio.Protocol):
    """The least a Python server on httptools does for the same request."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.body: list[bytes] = []
        self.headers: list[Header] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, headers = b"".join(self.body), self.headers
        self.body, self.headers = [], []
        self.loop.create_task(self.serve(headers, body))

    async def serve(self, headers: list[Header], body: bytes) -> None:
        parts = [b"HTTP/1.1 200 OK\r\n"]
        for name, value in ANSWER_HEADERS:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", ANSWER_BODY)
        self.transport.write(b"".join(parts))  # type: ignore[attr-defined]


def gateway_protocol() -> asyncio.Protocol:
    config = uvicorn.Config(
        App(),
        http=GatewayHttpProtocol,
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # as `gateway serve` runs it
        server_header=False,
    )
    config.load()
    return GatewayHttpProtocol(config=config, server_state=ServerState(), app_state={})


async def per_request_us(make: Callable[[], asyncio.Protocol], requests: int) -> float:
    """µs of CPU per request, less the loop's own turn (``sleep(0)``) measured alike."""
    protocol = make()
    transport = CountingTransport()
    protocol.connection_made(transport)
    for _ in range(500):  # warm-up
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the answer's task runs in this turn
    spent = time.process_time() - started
    started = time.process_time()
    for _ in range(requests):
        await asyncio.sleep(0)
    spent -= time.process_time() - started
    if transport.writes != requests + 500:
        raise RuntimeError(f"{transport.writes} answers for {requests + 500} requests")
    return spent / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cases: dict[str, Callable[[], asyncio.Protocol]] = {
        "bare httptools protocol (baseline)": BareProtocol,
        "GatewayHttpProtocol": gateway_protocol,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, make in cases.items():
            results[name].append(uvloop.run(per_request_us(make, args.requests)))
    print(f"CPU µs per request, median (min) of {args.rounds} rounds of {args.requests:,}")
    print_medians("protocol", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
