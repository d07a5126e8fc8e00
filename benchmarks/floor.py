"""``python -m benchmarks.floor``: what the least Python could do with a cache hit, here.

The gateway's hit target is "at least direct Triton's req/s" (issue 7). This measures how
close any Python server gets on this machine, so the gap between the gateway and the target
splits into what the gateway adds and what Python on uvloop costs at all.

The floor server (``floor.py serve``, one process per worker, ``SO_REUSEPORT``) does only what
no hit can skip: httptools parses the request, orjson reads ``entity_id``, the gateway's own
Redis commands for the entity (HMGET of the model's features and their event time, GET of the
cached prediction) go out with those of every other request of the same loop iteration in one
write, hiredis reads the replies, the record is decoded as the gateway decodes it, and an
answer of the gateway's shape (same JSON fields and headers) goes back in one write. It keeps
no coroutine per request (style ``callbacks``: everything runs in protocol callbacks) or one
task per request awaiting a future (``tasks``, as the gateway's fast path does). It skips
everything else the gateway does per request: authentication, admission (in-flight bound,
rate limit), the deadline, schema validation, the serving ladder's policy, metrics, tracing
and logging context, and every error path. Two more styles measure what those cost:
``checked`` adds, inline, the per-answer work no hit may skip (the API key looked up, the
in-flight bound, a request id, the entity id validated, a deadline timer on the lookup, the
freshness rule, two histogram observations, the log context and ``Server-Timing``);
``uvicorn`` is ``tasks`` served through uvicorn and the gateway's own
``GatewayHttpProtocol`` (connection bookkeeping, scope, keep-alive), as ``gateway serve``
runs, instead of a bare protocol.

Style ``miss`` is the floor of a real-time miss (``--path miss``), in the shape of ``tasks``:
the same lookup (features and the cached prediction, which the gateway reads for its stale
fallback), one row of Python floats per request, the rows of one loop iteration (held, while a
call is out, until it ends or the gateway's default 2 ms window ends) sent to Triton as one
``ModelInfer`` call on the generated gRPC stub, the score handed back, the prediction
written back (the gateway's encoding and expiry, one write per 5 ms window) and an answer of
the gateway's shape. It skips what ``tasks`` skips, and the miss path's own machinery: the
ladder's other rungs, coalescing of identical misses, the circuit breaker, call metrics.

The driver starts Redis, Triton (response cache off, as in ``benchmarks.run``), the demo
features, the gateway (``--workers``, its defaults) with every demo entity's prediction
cached, and the floor, then alternates ``wrk`` rounds over direct Triton, the floors and the
gateway (its hit path, or with ``--path miss`` its miss as ``benchmarks.run`` asks for one:
cache mode ``bypass``), and prints medians and paired per-round ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextvars
import itertools
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

from benchmarks.run import (
    LUA_COMMON,
    LUA_TRITON,
    ROOT,
    SPEC,
    cpu_seconds,
    gateway_lua,
    load_demo,
    prewarm,
    run_wrk,
    stop_process,
    without_queue_policy,
)
from gateway.cache import Usability
from triton_launcher.ports import free_port

N_ENTITIES = 2_000
MISS_ENTITIES = 10_000  # as benchmarks.run's miss
INFER_WINDOW_S = 0.002  # the gateway's defaults
WRITE_BACK_WINDOW_S = 0.005
MAX_IN_FLIGHT = 256
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
WHITESPACE = re.compile(r"\s")


class _Histogram:
    """A buffered Prometheus histogram's per-observation work (gateway.telemetry.metrics)."""

    def __init__(self) -> None:
        self.bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


# --- the floor server ---------------------------------------------------------------------


def serve(port: int, redis_url: str, style: str, triton_url: str | None = None) -> None:
    import grpc
    import hiredis
    import httptools
    import numpy as np
    import orjson
    import uvloop
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    from gateway.cache import CachedPrediction, prediction_key
    from gateway.features import EVENT_TIME_FIELD, feature_key
    from gateway.resp import HmgetCommand, pack_get, pack_set_ex
    from gateway.spec import load_specs

    spec = load_specs(SPEC)["fraud_scorer"]
    # What the "checked" style adds: the gateway's own figures for these checks.
    api_keys = {os.environ.get("FLOOR_API_KEY"): frozenset({"*"})}
    in_flight = [0]
    id_prefix, id_counter = os.urandom(8).hex(), itertools.count()
    log_context: contextvars.ContextVar[object] = contextvars.ContextVar("floor_log_context")
    predictions, durations = _Histogram(), _Histogram()
    served = [0]
    version = "1"
    hmget = HmgetCommand([*(f.name for f in spec.features), EVENT_TIME_FIELD])
    names = [o.name for o in spec.outputs]
    date = [formatdate(usegmt=True).encode(), time.monotonic()]

    class Redis(asyncio.Protocol):
        """One pipelined connection; the commands of one loop iteration go out in one write."""

        def __init__(self) -> None:
            self.reader = hiredis.Reader()
            self.waiting: collections.deque[tuple[object, list[object], int]] = collections.deque()
            self.outgoing: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def send(self, commands: list[bytes], done: object, n_replies: int = 2) -> None:
            if not self.outgoing:
                loop.call_soon(self.flush)
            self.outgoing += commands
            self.waiting.append((done, [], n_replies))

        def flush(self) -> None:
            self.transport.write(b"".join(self.outgoing))  # type: ignore[attr-defined]
            self.outgoing = []

        def data_received(self, data: bytes) -> None:
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                done, replies, n_replies = self.waiting[0]
                replies.append(reply)
                if len(replies) == n_replies:
                    self.waiting.popleft()
                    done(replies)  # type: ignore[operator]

    def answer(
        entity_id: str, replies: list[object], request_id: str | None = None, started: float = 0
    ) -> bytes:
        if time.monotonic() - date[1] > 1:  # type: ignore[operator]
            date[:] = [formatdate(usegmt=True).encode(), time.monotonic()]
        headers, body = answer_parts(entity_id, replies, request_id, started)
        head = [b"HTTP/1.1 200 OK", b"date: " + date[0]]  # type: ignore[operator]
        head += [name + b": " + value for name, value in headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def answer_parts(
        entity_id: str, replies: list[object], request_id: str | None, started: float
    ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        values, raw = replies
        written_at = values[-1]  # type: ignore[index]
        cached = CachedPrediction.decode(raw) if raw else None  # type: ignore[arg-type]
        assert cached is not None, f"no cached prediction for {entity_id}"
        now = time.time()
        age = now - cached.scored_at
        feature_age = None if written_at is None else now - float(written_at)  # type: ignore[arg-type]
        if request_id is None:
            request_id = os.urandom(8).hex()
        body = orjson.dumps(
            {
                "model": spec.name,
                "model_version": cached.model_version,
                "entity_id": entity_id,
                "scores": dict(zip(names, cached.scores, strict=True)),
                "source": "cache",
                "prediction_age_s": round(age, 3),
                "feature_age_s": None if feature_age is None else round(feature_age, 3),
                "flags": [],
                "request_id": request_id,
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-prediction-source", b"cache"),
            (b"x-model-version", cached.model_version.encode()),
            (b"x-prediction-age", b"%.3f" % age),
        ]
        if feature_age is not None:
            headers.append((b"x-feature-age", b"%.3f" % feature_age))
        headers.append((b"x-request-id", request_id.encode()))
        if started:
            timing = b"app;dur=%.1f" % ((time.perf_counter() - started) * 1000)
            headers.append((b"server-timing", timing))
        return headers, body

    def commands(entity_id: str) -> list[bytes]:
        return [
            hmget.pack(feature_key(spec.entity_namespace, entity_id)),
            pack_get(prediction_key(spec.name, version, entity_id)),
        ]

    # --- style "miss": features to Triton, per-iteration (or windowed) calls, write-back ---
    infer_rows: list[list[float]] = []
    infer_waiting: list[asyncio.Future[float]] = []
    writes: list[bytes] = []
    calling = [0]  # Triton calls in flight
    held: list[asyncio.TimerHandle] = []  # the timer of a batch held behind a call
    requested = [pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in names]

    def infer(row: list[float]) -> asyncio.Future[float]:
        """The row joins this iteration's Triton call; while a call is out, the batch waits
        for it to end, at most the gateway's default window (``GATEWAY_INFER_WINDOW_MS``), as
        the gateway does."""
        done: asyncio.Future[float] = loop.create_future()
        if not infer_rows:
            if calling[0]:
                held.append(loop.call_later(INFER_WINDOW_S, flush_infer))
            else:
                loop.call_soon(flush_infer)
        infer_rows.append(row)
        infer_waiting.append(done)
        return done

    def flush_infer() -> None:
        if held:
            held.pop().cancel()
        if not infer_rows:
            return
        rows, waiting = np.asarray(infer_rows, dtype=np.float32), infer_waiting[:]
        infer_rows.clear()
        infer_waiting.clear()
        calling[0] += 1
        loop.create_task(call_triton(rows, waiting))

    async def call_triton(rows: Any, waiting: list[asyncio.Future[float]]) -> None:
        request = pb.ModelInferRequest(
            model_name=spec.triton_name,
            model_version=version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=spec.input_name, datatype=spec.input_dtype, shape=rows.shape
                )
            ],
            outputs=requested,
            raw_input_contents=[rows.tobytes()],
        )
        try:
            response = await stub.ModelInfer(request, timeout=1.0)
        finally:
            calling[0] -= 1
            if held:
                flush_infer()
        scores = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).tolist()
        for done, score in zip(waiting, scores, strict=True):
            done.set_result(score)

    def write_back(entity_id: str, prediction: CachedPrediction) -> None:
        """Joins the iteration's one write of SET commands (the gateway's, with its window)."""
        if not writes:
            loop.call_later(WRITE_BACK_WINDOW_S, flush_writes)
        writes.append(
            pack_set_ex(
                prediction_key(spec.name, version, entity_id), prediction.encode(), spec.cache_ttl_s
            )
        )

    def flush_writes() -> None:
        redis.send(writes[:], lambda _: None, len(writes))
        writes.clear()

    async def serve_miss(entity_id: str) -> bytes:
        replies: asyncio.Future[list[object]] = loop.create_future()
        redis.send(commands(entity_id), replies.set_result)
        values, _cached = await replies  # read as the gateway reads it: the stale fallback
        stored = values[:-1]  # type: ignore[index]
        written_at = values[-1]  # type: ignore[index]
        features_at = None if written_at is None else float(written_at)
        row = list(map(float, stored))
        score = await infer(row)
        now = time.time()
        write_back(entity_id, CachedPrediction((score,), version, now, features_at))
        feature_age = None if features_at is None else max(0.0, now - features_at)
        request_id = os.urandom(8).hex()
        body = orjson.dumps(
            {
                "model": spec.name,
                "model_version": version,
                "entity_id": entity_id,
                "scores": {names[0]: score},
                "source": "model",
                "prediction_age_s": 0.0,
                "feature_age_s": None if feature_age is None else round(feature_age, 3),
                "flags": [],
                "request_id": request_id,
            }
        )
        if time.monotonic() - date[1] > 1:  # type: ignore[operator]
            date[:] = [formatdate(usegmt=True).encode(), time.monotonic()]
        head = [
            b"HTTP/1.1 200 OK",
            b"date: " + date[0],  # type: ignore[operator]
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"x-prediction-source: model",
            b"x-model-version: " + version.encode(),
            b"x-prediction-age: 0.000",
        ]
        if feature_age is not None:
            head.append(b"x-feature-age: %.3f" % feature_age)
        head.append(b"x-request-id: " + request_id.encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.headers: list[tuple[bytes, bytes]] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_message_complete(self) -> None:
            if style == "checked":
                loop.create_task(self.serve_checked(self.headers, b"".join(self.body)))
                self.body, self.headers = [], []
                return
            entity_id = orjson.loads(b"".join(self.body))["entity_id"]
            self.body, self.headers = [], []
            if style == "callbacks":
                redis.send(commands(entity_id), lambda r: self.reply(answer(entity_id, r)))
            elif style == "miss":
                loop.create_task(self.serve_miss(entity_id))
            else:
                loop.create_task(self.serve(entity_id))

        async def serve(self, entity_id: str) -> None:
            replies: asyncio.Future[list[object]] = loop.create_future()
            redis.send(commands(entity_id), replies.set_result)
            self.reply(answer(entity_id, await replies))

        async def serve_miss(self, entity_id: str) -> None:
            self.reply(await serve_miss(entity_id))

        async def serve_checked(self, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
            # The floor plus what every answer must do; an answer it cannot give is a bug here.
            started = time.perf_counter()
            log_context.set(headers)
            if in_flight[0] >= MAX_IN_FLIGHT:
                raise RuntimeError("shed")
            in_flight[0] += 1
            try:
                key = supplied_id = timeout = None
                for name, value in headers:
                    if name == b"authorization":
                        key = value.decode("latin-1").partition(" ")[2].strip()
                    elif name == b"x-request-id":
                        supplied_id = value.decode("latin-1")
                    elif name == b"x-request-timeout-ms":
                        timeout = int(value)
                allowed = api_keys.get(key)
                if allowed is None or not ("*" in allowed or spec.name in allowed):
                    raise RuntimeError("unauthenticated")
                request_id = (
                    supplied_id
                    if supplied_id and REQUEST_ID.match(supplied_id)
                    else f"{id_prefix}{next(id_counter):016x}"
                )
                entity_id = orjson.loads(body)["entity_id"]
                if (
                    not isinstance(entity_id, str)
                    or not entity_id
                    or len(entity_id) > spec.max_id_length
                    or not entity_id.isprintable()
                    or WHITESPACE.search(entity_id)
                ):
                    raise RuntimeError("invalid entity_id")
                replies: asyncio.Future[list[object]] = loop.create_future()
                redis.send(commands(entity_id), lambda r: replies.done() or replies.set_result(r))
                budget = 0.3 if timeout is None else timeout / 1000
                timer = loop.call_later(budget, replies.cancel)
                try:
                    got = await replies
                finally:
                    timer.cancel()
                values, raw = got
                written_at = values[-1]  # type: ignore[index]
                cached = CachedPrediction.decode(raw) if raw else None  # type: ignore[arg-type]
                features_at = None if written_at is None else float(written_at)  # type: ignore[arg-type]
                now = time.time()
                if (
                    cached is None
                    or cached.usability(
                        now=now, version=version, policy=spec.policy, features_at=features_at
                    )
                    is not Usability.FRESH
                ):
                    raise RuntimeError(f"no fresh cached prediction for {entity_id}")
                predictions.observe(now - cached.scored_at)
                data = answer(entity_id, got, request_id, started)
                self.reply(data)
                served[0] += 1  # the requests counter
            finally:
                in_flight[0] -= 1
                durations.observe(time.perf_counter() - started)

        def reply(self, data: bytes) -> None:
            if not self.transport.is_closing():  # type: ignore[attr-defined]
                self.transport.write(data)  # type: ignore[attr-defined]

    connected: list[Redis] = []

    async def connect() -> None:
        host, _, redis_port = redis_url.removeprefix("redis://").partition(":")
        _, protocol = await loop.create_connection(Redis, host, int(redis_port.split("/")[0]))
        connected.append(protocol)

    class FloorFastPath:
        """What ``GatewayHttpProtocol`` hands a predict request to (style ``uvicorn``)."""

        max_body_bytes = 1 << 20

        def serves(self, model: str) -> bool:
            return model == spec.name

        async def serve(self, scope: object, body: bytes, model: str, respond: Any) -> None:
            entity_id = orjson.loads(body)["entity_id"]
            replies: asyncio.Future[list[object]] = loop.create_future()
            redis.send(commands(entity_id), replies.set_result)
            headers, content = answer_parts(entity_id, await replies, None, 0)
            await respond(200, headers, content)

    class FloorApp:
        fast_path = FloorFastPath()

        async def __call__(self, scope: object, receive: object, send: object) -> None:
            raise RuntimeError("only predict requests are served here")

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(connect())
    redis = connected[0]
    if style == "miss":
        if triton_url is None:
            raise SystemExit("style miss needs --triton")
        channel = grpc.aio.insecure_channel(triton_url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    if style == "uvicorn":
        import uvicorn

        from gateway.api.http_protocol import GatewayHttpProtocol

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(2048)  # before "ready": uvicorn starts serving only once its loop runs
        config = uvicorn.Config(
            FloorApp(),
            http=GatewayHttpProtocol,
            lifespan="off",
            access_log=False,
            log_level="warning",
            proxy_headers=False,  # as `gateway serve` runs it
            server_header=False,
        )
        print("ready", flush=True)
        loop.run_until_complete(uvicorn.Server(config).serve(sockets=[sock]))
        return
    server = loop.run_until_complete(loop.create_server(Http, "127.0.0.1", port, reuse_port=True))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


# --- the driver ---------------------------------------------------------------------------


def start_floor(
    workers: int,
    redis_url: str,
    style: str,
    api_key: str | None = None,
    triton_url: str | None = None,
) -> tuple[list[subprocess.Popen[bytes]], str]:
    port = free_port()
    procs = []
    for _ in range(workers):
        cmd = [sys.executable, "-m", "benchmarks.floor", "serve", "--port", str(port)]
        cmd += ["--redis", redis_url, "--style", style]
        if triton_url is not None:
            cmd += ["--triton", triton_url]
        env = {**os.environ, "FLOOR_API_KEY": api_key or ""}
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True
        )
        procs.append(proc)
        if proc.stdout is None:
            raise RuntimeError("no pipe to the floor server")
        with proc.stdout:  # it prints only "ready"
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"floor server ({style}) did not start")
    return procs, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve")
    srv.add_argument("--port", type=int, required=True)
    srv.add_argument("--redis", required=True)
    srv.add_argument("--triton", help="Triton's gRPC host:port (style miss)")
    srv.add_argument(
        "--style", choices=["callbacks", "tasks", "checked", "uvicorn", "miss"], default="tasks"
    )
    parser.add_argument(
        "--path",
        choices=["hit", "miss"],
        default="hit",
        help="the gateway's hit against the hit floors, or its miss against the miss floor",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.redis, args.style, args.triton)
        return 0

    from devstack.gateway_process import GatewayProcess
    from devstack.redis_server import RedisServer
    from triton_launcher.launcher import TritonServer

    tmp = Path(tempfile.mkdtemp(prefix="floor-"))
    redis = RedisServer()
    triton = TritonServer(without_queue_policy(ROOT / "model_repository", tmp), cache_size_bytes=0)
    floors: list[subprocess.Popen[bytes]] = []
    try:
        redis.start()
        triton.start()
        asyncio.run(load_demo(redis.url))
        with GatewayProcess(
            spec_path=SPEC,
            redis_url=redis.url,
            triton_url=triton.grpc_url,
            workers=args.workers,
            cwd=ROOT,
        ) as gateway:
            prewarm(gateway.url, N_ENTITIES, gateway.headers)
            targets: dict[str, tuple[str, str, list[int]]] = {
                "direct Triton": (triton.http_url, LUA_TRITON, [triton.pid])
            }
            if args.path == "hit":
                lua = gateway_lua(N_ENTITIES, "", gateway.api_key)
                targets["gateway hit"] = (gateway.url, lua, [gateway.pid])
                styles = ["tasks", "callbacks", "checked", "uvicorn"]
            else:
                # The gateway's miss as benchmarks.run measures it: cache mode bypass.
                lua = gateway_lua(MISS_ENTITIES, ',"cache":"bypass"', gateway.api_key)
                targets["gateway miss"] = (gateway.url, lua, [gateway.pid])
                styles = ["miss"]
            for style in styles:
                procs, url = start_floor(
                    args.workers, redis.url, style, gateway.api_key, triton.grpc_url
                )
                floors += procs
                targets[f"floor ({style})"] = (url, lua, [p.pid for p in procs])
            rounds: list[dict[str, tuple[float, float]]] = []
            for n in range(args.rounds):
                figures = {}
                order = list(targets) if n % 2 == 0 else list(reversed(targets))
                for name in order:
                    url, lua, pids = targets[name]
                    script = tmp / "target.lua"
                    script.write_text(LUA_COMMON + lua)
                    run_wrk(url, script, args.connections, 1, 2)
                    cpu0 = cpu_seconds(pids)
                    out = run_wrk(url, script, args.connections, args.duration, 2)
                    cpu1 = cpu_seconds(pids)
                    if out["non2xx"] or out["socket_errors"]:
                        raise RuntimeError(f"{name} answered with errors: {out}")
                    figures[name] = (out["rps"], (cpu1 - cpu0) / out["requests"] * 1000)
                    print(
                        f"round {n + 1} {name}: {out['rps']:,.0f} req/s, "
                        f"{figures[name][1]:.3f} ms CPU/request",
                        flush=True,
                    )
                rounds.append(figures)
    finally:
        for proc in floors:
            stop_process(proc)
        triton.stop()
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n{args.workers} worker(s), wrk -t2 -c{args.connections} -d{args.duration:g}s, "
        f"medians of {args.rounds} rounds; ratio: req/s over direct Triton's in the same round"
    )
    print("| target | req/s | CPU ms/request | ratio (range) |\n|---|---:|---:|---:|")
    for name in rounds[0]:
        rps = statistics.median(r[name][0] for r in rounds)
        cpu = statistics.median(r[name][1] for r in rounds)
        ratios = [r[name][0] / r["direct Triton"][0] for r in rounds]
        print(
            f"| {name} | {rps:,.0f} | {cpu:.3f} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
