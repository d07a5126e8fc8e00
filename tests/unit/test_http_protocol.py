"""GatewayHttpProtocol against a real uvicorn server on a free port, over raw sockets.

A scripted fast path stands in for :class:`PredictFastPath` so each connection behaviour
(keep-alive, pipelining, HTTP/1.0, hand-over to ASGI, disconnects, shutdown) can be driven
exactly; the real fast path through this protocol is what every integration test talks to
(``gateway serve`` runs it), and the last test here runs the real one with a stand-in service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from gateway.api import http_protocol
from gateway.api.http_protocol import GatewayHttpProtocol
from tests.unit.test_fastpath import MODEL, StandInService, build

Header = tuple[bytes, bytes]


class ScriptedFastPath:
    """Answers ``fast:<model>:<body>``; model ``slow`` waits for ``release``, ``bug`` raises."""

    max_body_bytes = 1_048_576

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.targets: list[tuple[bytes, bytes]] = []
        """Each request's ``raw_path`` and ``query_string``."""
        self.release = asyncio.Event()
        self.finished = 0

    def serves(self, model: str) -> bool:
        return model != "unserved"

    async def serve(
        self,
        scope: Scope,
        body: bytes,
        model: str,
        respond: Callable[[int, list[Header], bytes], Awaitable[None]],
    ) -> None:
        assert isinstance(body, bytes)  # the protocol hands over the buffered body
        self.seen.append((model, scope["path"], body))
        self.targets.append((scope["raw_path"], scope["query_string"]))
        try:
            if model == "slow":
                await self.release.wait()
            if model == "bug":
                raise RuntimeError("a bug around the app")
            content = b"fast:" + model.encode() + b":" + body
            await respond(
                200,
                [(b"content-length", b"%d" % len(content)), (b"x-served-by", b"fast")],
                content,
            )
        finally:
            self.finished += 1


class AsgiApp:
    """What uvicorn's own path serves: ``asgi:<method> <path>:<body>``."""

    def __init__(self, fast_path: Any) -> None:
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        content = f"asgi:{scope['method']} {scope['path']}:".encode() + body
        headers = [(b"content-length", b"%d" % len(content)), (b"x-served-by", b"asgi")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""


class Responses:
    """httptools' response parser over everything the server wrote."""

    def __init__(self) -> None:
        self.done: list[Response] = []
        self._current = Response()
        self._parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self._current.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self._current)


@dataclass
class Server:
    port: int
    server: uvicorn.Server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes, count: int = 1) -> tuple[list[Response], bool]:
        """Send ``raw`` on a new connection; the first ``count`` answers, and whether the
        server closed the connection after them."""
        reader, writer = await self.connect()
        try:
            writer.write(raw)
            answers = await read_answers(reader, count)
            closed = await closes(reader)
        finally:
            writer.close()
        return answers, closed


async def read_answers(reader: asyncio.StreamReader, count: int) -> list[Response]:
    parsed = Responses()
    async with asyncio.timeout(5):
        while len(parsed.done) < count:
            data = await reader.read(65536)
            assert data, f"connection closed after {len(parsed.done)} of {count} answers"
            parsed.feed(data)
    return parsed.done


async def closes(reader: asyncio.StreamReader, within_s: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(within_s):
            return await reader.read(1) == b""
    except TimeoutError:
        return False


@contextlib.asynccontextmanager
async def serving(app: Any, **overrides: Any) -> AsyncIterator[Server]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    options: dict[str, Any] = {
        "http": GatewayHttpProtocol,
        "lifespan": "off",
        "log_config": None,  # leave the test process's logging alone
        "proxy_headers": False,  # as `gateway serve` runs it: the app is not wrapped
        "timeout_graceful_shutdown": 5,
    }
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **overrides}))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(5):
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
            await asyncio.sleep(0.01)
    try:
        yield Server(sock.getsockname()[1], server)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
def fast() -> ScriptedFastPath:
    return ScriptedFastPath()


@pytest.fixture
async def server(fast: ScriptedFastPath) -> AsyncIterator[Server]:
    async with serving(AsgiApp(fast)) as s:
        yield s


def post(path: str, body: bytes = b"{}", *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: gw", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_predict_requests_are_answered_by_the_fast_path_on_a_kept_connection(
    server: Server, fast: ScriptedFastPath
) -> None:
    reader, writer = await server.connect()
    answers = []
    for raw in (post("/v1/models/m/predict?x=1", b'{"a":1}'), post("/v1/models/n/predict")):
        writer.write(raw)
        answers += await read_answers(reader, 1)
    closed = await closes(reader)
    writer.close()
    assert [(a.status, a.body) for a in answers] == [
        (200, b'fast:m:{"a":1}'),
        (200, b"fast:n:{}"),
    ]
    assert all(a.headers[b"x-served-by"] == b"fast" and b"date" in a.headers for a in answers)
    assert not closed  # kept alive
    assert fast.seen == [
        ("m", "/v1/models/m/predict", b'{"a":1}'),
        ("n", "/v1/models/n/predict", b"{}"),
    ]
    assert server.server.server_state.total_requests == 2


async def test_a_served_models_plain_target_is_parsed_once(
    server: Server, fast: ScriptedFastPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_protocol, "_PLAIN_TARGETS", {})
    targets = [
        "/v1/models/served/predict",
        "/v1/models/served/predict",  # from the memo
        "/v1/models/served/predict?x=1",  # has a query: parsed, not remembered
        "/v1/models/unserved/predict",  # a name made up: parsed, not remembered
        "/v1/models/unserved/predict",
    ]
    reader, writer = await server.connect()
    for target in targets:
        writer.write(post(target))
        [answer] = await read_answers(reader, 1)
        assert answer.headers[b"x-served-by"] == b"fast", target
    writer.close()
    models = ["served"] * 3 + ["unserved"] * 2
    assert fast.seen == [
        (m, t.partition("?")[0], b"{}") for m, t in zip(models, targets, strict=True)
    ]
    assert fast.targets == [
        (t.partition("?")[0].encode(), t.partition("?")[2].encode()) for t in targets
    ]
    assert http_protocol._PLAIN_TARGETS == {
        b"/v1/models/served/predict": ("/v1/models/served/predict", "served")
    }


async def idle_until_closed(reader: asyncio.StreamReader, limit_s: float = 5.0) -> float:
    """Seconds until the server closes the connection (nothing else may arrive)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(limit_s):
        assert await reader.read(1) == b""
    return loop.time() - start


@pytest.mark.parametrize("path", ["/v1/models/m/predict", "/healthz"])
async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    fast: ScriptedFastPath, path: str
) -> None:
    async with serving(AsgiApp(fast), timeout_keep_alive=0.3) as server:
        reader, writer = await server.connect()
        writer.write(post(path))
        await read_answers(reader, 1)
        idle_s = await idle_until_closed(reader)
        writer.close()
    assert 0.28 <= idle_s < 1.5


async def test_a_busy_connection_outlives_the_keep_alive_timeout(fast: ScriptedFastPath) -> None:
    async with serving(AsgiApp(fast), timeout_keep_alive=0.3) as server:
        reader, writer = await server.connect()
        for n in range(8):  # 1.2 s of requests, each 0.15 s after the last answer
            writer.write(post("/v1/models/m/predict", b"%d" % n))
            [answer] = await read_answers(reader, 1)
            assert answer.body == b"fast:m:%d" % n
            await asyncio.sleep(0.15)
        idle_s = await idle_until_closed(reader)  # then idle: closed once the timeout passes
        writer.close()
    assert 0.1 <= idle_s < 1.5  # 0.15 s of the timeout had passed already


async def test_a_request_longer_than_the_keep_alive_timeout_gets_its_answer(
    fast: ScriptedFastPath,
) -> None:
    async with serving(AsgiApp(fast), timeout_keep_alive=0.2) as server:
        reader, writer = await server.connect()
        writer.write(post("/v1/models/m/predict", b"1"))
        await read_answers(reader, 1)
        await asyncio.sleep(0.1)  # the timer armed by that answer fires during the next one
        writer.write(post("/v1/models/slow/predict", b"2"))
        await asyncio.sleep(0.6)
        fast.release.set()
        [answer] = await read_answers(reader, 1)
        idle_s = await idle_until_closed(reader)
        writer.close()
    assert answer.body == b"fast:slow:2"
    assert 0.18 <= idle_s < 1.5


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_access_logs_get_uvicorns_line(server: Server) -> None:
    access = logging.getLogger("uvicorn.access")
    handler = Lines()
    access.addHandler(handler)  # a handler makes uvicorn's protocol log access lines
    level = access.level
    access.setLevel(logging.INFO)
    try:
        await server.exchange(post("/v1/models/m/predict?x=1"))
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    [line] = handler.lines
    assert line.startswith("127.0.0.1:")
    assert line.endswith(' - "POST /v1/models/m/predict?x=1 HTTP/1.1" 200')


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (post("/v1/models/m/predict/"), "another path"),
        (post("/v1/models/m%20x/predict"), "percent-encoded"),
        (b"GET /v1/models/m/predict HTTP/1.1\r\nHost: gw\r\n\r\n", "another method"),
        (
            b"POST /v1/models/m/predict HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n2\r\n{}\r\n0\r\n\r\n",
            "chunked",
        ),
        (post("/v1/models/m/predict", b"x" * 70_000), "over 64 KiB"),
        (post("/v1/models/m/predict", b"{}", "Expect: 100-continue"), "expect 100-continue"),
    ],
)
async def test_everything_else_takes_uvicorns_path(
    server: Server, fast: ScriptedFastPath, raw: bytes, why: str
) -> None:
    answers, _ = await server.exchange(raw, count=1)
    assert answers[-1].headers[b"x-served-by"] == b"asgi", why
    assert answers[-1].body.startswith(b"asgi:")
    assert fast.seen == []


async def test_an_http_1_0_request_is_answered_then_closed(server: Server) -> None:
    answers, closed = await server.exchange(post("/v1/models/m/predict", version="1.0"))
    assert answers[0].body == b"fast:m:{}"
    assert answers[0].headers[b"connection"] == b"close"
    assert closed


async def test_pipelined_requests_are_answered_in_order(
    server: Server, fast: ScriptedFastPath
) -> None:
    reader, writer = await server.connect()
    # A predict still in flight, then one for uvicorn's path, then another predict.
    writer.write(
        post("/v1/models/slow/predict", b"1")
        + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        + post("/v1/models/m/predict", b"3")
    )
    await asyncio.sleep(0.1)
    assert [model for model, _, _ in fast.seen] == ["slow"]  # the rest wait their turn
    fast.release.set()
    answers = await read_answers(reader, 3)
    writer.close()
    assert [a.body for a in answers] == [
        b"fast:slow:1",
        b"asgi:GET /healthz:",
        b"asgi:POST /v1/models/m/predict:3",
    ]


async def test_a_client_gone_before_its_answer_leaves_the_server_serving(
    server: Server, fast: ScriptedFastPath
) -> None:
    _, writer = await server.connect()
    writer.write(post("/v1/models/slow/predict"))
    await asyncio.sleep(0.1)
    writer.close()
    await asyncio.sleep(0.1)
    fast.release.set()  # the answer is ready for a connection that is gone
    answers, _ = await server.exchange(post("/v1/models/m/predict"))
    assert answers[0].body == b"fast:m:{}"
    assert fast.finished == 2


async def test_a_bug_around_the_app_closes_the_connection_and_is_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.api.http_protocol"):
        reader, writer = await server.connect()
        writer.write(post("/v1/models/bug/predict"))
        assert await closes(reader, within_s=2)
        writer.close()
    assert any("a bug around the app" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    answers, _ = await server.exchange(post("/v1/models/m/predict"))
    assert answers[0].status == 200


async def test_shutdown_waits_for_the_answer_in_flight_then_closes(fast: ScriptedFastPath) -> None:
    async with serving(AsgiApp(fast)) as s:
        reader, writer = await s.connect()
        writer.write(post("/v1/models/slow/predict"))
        await asyncio.sleep(0.1)
        s.server.should_exit = True  # as SIGTERM does
        await asyncio.sleep(0.3)
        fast.release.set()
        answers = await read_answers(reader, 1)
        assert answers[0].body == b"fast:slow:{}"
        assert answers[0].headers[b"connection"] == b"close"
        assert await closes(reader)
        writer.close()


@pytest.mark.parametrize(
    "config", [{"limit_concurrency": 100}, {"proxy_headers": True}, {"root_path": "/gw"}]
)
async def test_settings_that_change_every_answer_keep_requests_on_uvicorns_path(
    fast: ScriptedFastPath, config: dict[str, Any]
) -> None:
    async with serving(AsgiApp(fast), **config) as s:
        answers, _ = await s.exchange(post("/v1/models/m/predict"))
        assert answers[0].headers[b"x-served-by"] == b"asgi"


class WithLifespanState:
    """Lifespan state as the gateway's lifespan yields it; uvicorn puts it on every scope."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.fast_path = app.fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    scope["state"]["service"] = StandInService()
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


async def test_the_real_fast_path_answers_through_the_protocol(tmp_path: Path) -> None:
    from gateway.keys import mint, write_keys_file

    full_key, entry = mint("unit-proto", ["*"])
    write_keys_file(tmp_path / "keys.yaml", [entry])
    app, _ = build(tmp_path / "keys.yaml")
    async with serving(WithLifespanState(app), lifespan="on") as s:
        auth = f"Authorization: Bearer {full_key}"
        raw = post("/v1/models/nope/predict", b'{"entity_id":"e1"}', auth, "X-Request-ID: r-1")
        raw += post(f"/v1/models/{MODEL}/predict", b"{nope", auth)
        raw += post(f"/v1/models/{MODEL}/predict", b"{}")
        answers, _ = await s.exchange(raw, count=3)
    assert [a.status for a in answers] == [404, 400, 401]
    assert answers[0].headers[b"x-request-id"] == b"r-1"
    assert answers[0].headers[b"content-type"] == b"application/problem+json"
    assert all(a.headers[b"server-timing"].startswith(b"app;dur=") for a in answers)
