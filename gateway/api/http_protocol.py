"""uvicorn's httptools protocol, with predict requests answered without an ASGI cycle.

For every request uvicorn builds a ``RequestResponseCycle``, runs the app through ASGI
``receive``/``send`` message dicts, checks every response header against two regexes and
writes the status line and headers, then the body, in two socket writes. On this machine that
cost 0.075 ms of CPU per request for an app that answers a fixed body, against 0.02 ms for
the same answer from a bare httptools protocol (docs/measurements.md): a quarter of a cache
hit's whole cost.

So ``POST /v1/models/{model}/predict`` with a ``Content-Length`` body of at most 64 KiB (the
single-entity and small-batch requests that are nearly all of the traffic) is handed, once the
body is in, straight to :meth:`PredictFastPath.serve`, and its answer goes out in one write.
Everything else (other routes, chunked or large bodies, ``Expect: 100-continue``, upgrades,
a request pipelined behind one still in flight) takes uvicorn's own path unchanged.

The connection's bookkeeping stays uvicorn's: keep-alive, pipelining, flow control, graceful
shutdown (the answer's task is one of the server's tasks, so a drain waits for it) and the
request count behind ``--limit-max-requests``. Only the keep-alive timeout is kept
differently: uvicorn arms a timer after every answer and cancels it when the next request's
bytes arrive, two timer operations per request; here a connection keeps one timer, which at
expiry closes the connection if it has been idle for the whole timeout since its last answer,
and otherwise waits out the rest (or, with a request in progress, waits for its answer).

This relies on uvicorn's internals, which is why uvicorn is pinned to one version;
``tests/unit/test_http_protocol.py`` exercises each of those behaviours against a real server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import httptools
from starlette.types import Scope
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from gateway.api.fastpath import Header, PredictFastPath, predict_path_model

log = logging.getLogger(__name__)

_PLAIN_TARGETS: dict[bytes, tuple[str, str]] = {}
"""Request targets that are exactly a served model's predict path (no query, nothing
encoded), with that path and model: parsing the target was ~5 µs of every request
(docs/measurements.md). Only served models' paths are kept, so clients cannot grow it."""


class _PredictCycle(RequestResponseCycle):
    """A predict request in flight: the state uvicorn's protocol reads from its cycle.

    ``shutdown`` clears ``keep_alive``, ``connection_lost`` sets ``disconnected`` (and sets
    ``message_event``, which nothing here waits on, so every cycle shares one), and a pipelined
    request waits until ``response_complete``; there is no ASGI ``receive``/``send`` pair, so
    the base initialiser (which sets those up) is not run.
    """

    message_event = asyncio.Event()

    def __init__(
        self, scope: Any, fast_path: PredictFastPath, model: str, keep_alive: bool
    ) -> None:
        self.scope = scope
        self.fast_path = fast_path
        self.model = model
        self.keep_alive = keep_alive
        self.disconnected = False
        self.response_complete = False
        self.more_body = True
        self.body = bytearray()


class GatewayHttpProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=GatewayHttpProtocol)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fast_path = getattr(self.app, "fast_path", None)
        # Settings that change how uvicorn answers every request keep every request on its
        # path: a concurrency limit (its 503), a root path, per-task contextvars.
        plain = not (
            self.limit_concurrency is not None or self.root_path or self.config.reset_contextvars
        )
        self._fast_path: PredictFastPath | None = fast_path if plain else None
        self._idle_since: float | None = None
        """When the last answer went out, while no request's bytes have come since."""
        self._keep_alive_timer: asyncio.TimerHandle | None = None

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this when bytes arrive (and when the connection is lost): from here
        # until its answer a request keeps the connection open, whatever the timer finds.
        self._idle_since = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._keep_alive_timer is not None:
            self._keep_alive_timer.cancel()
            self._keep_alive_timer = None

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timer kept as the module docstring says.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self._keep_alive_timer is None:
            self._keep_alive_timer = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _keep_alive_due(self) -> None:
        self._keep_alive_timer = None
        idle_since = self._idle_since
        if idle_since is None:
            return  # a request is in progress: its answer arms the timer again
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._keep_alive_timer = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_headers_complete(self) -> None:
        model = self._predict_model()
        if model is None:
            super().on_headers_complete()
            return
        assert self._fast_path is not None  # _predict_model checked it
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = "POST"
        if http_version != "1.1":
            scope["http_version"] = http_version
        self.cycle = _PredictCycle(
            scope,
            self._fast_path,
            model,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
        )

    def _predict_model(self) -> str | None:
        """The model, if this request is one the fast path takes; the scope gets its path."""
        fast_path = self._fast_path
        if fast_path is None or self.expect_100_continue:
            return None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return None  # pipelined behind a request in flight: uvicorn queues it
        parser = self.parser
        if parser.get_method() != b"POST" or parser.should_upgrade():
            return None
        target = self.url
        known = _PLAIN_TARGETS.get(target)
        if known is not None:
            path, model = known
            raw_path, query = target, b""
        else:
            url = httptools.parse_url(target)
            raw_path = url.path
            if b"%" in raw_path or not raw_path.isascii():
                return None  # percent-encoded: left to uvicorn's unquoting and the router
            path = raw_path.decode("ascii")
            found = predict_path_model(path)
            if found is None:
                return None
            model = found
            query = url.query or b""
            if raw_path == target and fast_path.serves(model):
                _PLAIN_TARGETS[target] = (path, model)
        length: bytes | None = None
        for name, value in self.headers:
            if name == b"content-length":
                if length is not None:
                    return None  # repeated: httptools and the app should not disagree
                length = value
            elif name == b"transfer-encoding":
                return None
        if length is None or not length.isdigit():
            return None
        if int(length) > min(HIGH_WATER_LIMIT, fast_path.max_body_bytes):
            # Buffered whole without pausing reads, so only up to uvicorn's high-water mark;
            # over the body limit, uvicorn's path and read_body answer 413 before reading it.
            return None
        scope = self.scope
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        return model

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _PredictCycle:
            cycle.body += body  # at most the declared length, itself at most 64 KiB
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not _PredictCycle:
            super().on_message_complete()
            return
        cycle.more_body = False
        task = self.loop.create_task(self._serve(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _serve(self, cycle: _PredictCycle) -> None:
        body = bytes(cycle.body)

        async def respond(status: int, headers: list[Header], content: bytes) -> None:
            if self.flow.write_paused and not cycle.disconnected:
                await self.flow.drain()  # the client is not reading: wait, as uvicorn does
            self._write(cycle, status, headers, content)

        try:
            scope = cast(Scope, cycle.scope)  # uvicorn's HTTPScope TypedDict is a Scope
            await cycle.fast_path.serve(scope, body, cycle.model, respond)
        except asyncio.CancelledError:
            self._abandon(cycle)
            raise
        except Exception:
            # serve() answers the app's own errors; this is a bug around it.
            log.exception("unhandled error answering a predict request")
            self._abandon(cycle)

    def _write(self, cycle: _PredictCycle, status: int, headers: list[Header], body: bytes) -> None:
        if cycle.disconnected:
            return
        parts = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            parts += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        if self.access_log:  # off in `gateway serve`; the same line uvicorn's path logs
            scope = cycle.scope
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                "POST",
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )
        cycle.response_complete = True
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _abandon(self, cycle: _PredictCycle) -> None:
        if not cycle.response_complete and not self.transport.is_closing():
            self.transport.close()
