"""``python -m benchmarks.triton_call_cost``: what one call to Triton costs the calling process.

Starts Triton (response cache off, no queue policy, as ``benchmarks.run``) and, in this one
process, makes ``--calls`` single-row inference calls with each client (one after another,
or from ``--in-flight`` concurrent callers), in alternating rounds: back to back, and (one
caller only) with a ``--gap-ms`` pause after each call (the regime of a gateway at a moderate
rate, where a miss rarely shares its Triton call and the process sleeps between requests).
Reports the median over rounds of the client process's CPU
per call (``time.process_time()``: every thread of this process, gRPC's included) and of the
median call latency. The pause itself costs CPU (a timer and a wake-up); ``sleep only``
measures that, so subtract it to compare.

Clients:

* ``tritonclient aio``: ``tritonclient.grpc.aio.InferenceServerClient.infer``;
* ``grpc.aio unary``: the ``GRPCInferenceService`` stub's ``ModelInfer`` (what the gateway
  uses, ``gateway/triton.py``);
* ``grpc.aio stream``: one ``ModelStreamInfer`` stream shared by the callers, writes one at a
  time, a reader task handing each answer to its caller by request id;
* ``HTTP/1.1``: Triton's KServe v2 endpoint over one keep-alive connection (asyncio streams),
  tensors in the binary extension.

Loopback only; Triton is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
import uvloop
from tritonclient.grpc import InferInput, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc.aio import InferenceServerClient

from benchmarks.run import ROOT, without_queue_policy
from triton_launcher.launcher import TritonServer

MODEL, VERSION, INPUT, OUTPUT = "fraud_scorer", "1", "features", "fraud_probability"
WIDTH = 14

Call = Callable[[Any], Awaitable[object]]
"""One call (here: an inference of one row, returning the score)."""
Client = tuple[Call, Callable[[], Awaitable[None]]]
"""A call and how to close what it uses."""


def row(i: int) -> np.ndarray:
    # Unique inputs, so that no cache could answer a repeat.
    values = np.full((1, WIDTH), 0.5, dtype=np.float32)
    values[0, 0] = 1.0 + i * 0.013
    return values


def pb_request(rows: np.ndarray) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=MODEL,
        model_version=VERSION,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=INPUT, datatype="FP32", shape=rows.shape)
        ],
        raw_input_contents=[rows.tobytes()],
    )


async def tritonclient_aio(url: str) -> Client:
    client = InferenceServerClient(url)

    async def call(rows: np.ndarray) -> float:
        tensor = InferInput(INPUT, list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = await client.infer(MODEL, [tensor], model_version=VERSION, client_timeout=1)
        return float(result.as_numpy(OUTPUT)[0, 0])

    return call, client.close


async def grpc_unary(url: str) -> Client:
    channel = grpc.aio.insecure_channel(url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def call(rows: np.ndarray) -> float:
        reply = await stub.ModelInfer(pb_request(rows), timeout=1)
        return float(np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)[0])

    return call, channel.close


async def grpc_stream(url: str) -> Client:
    """As the gateway would have to use a stream: writes one at a time (gRPC allows one send
    in flight per call), a reader task handing each answer to its caller by request id."""
    channel = grpc.aio.insecure_channel(url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    stream = stub.ModelStreamInfer()
    write_lock = asyncio.Lock()
    waiting: dict[str, asyncio.Future[pb.ModelStreamInferResponse]] = {}
    ids = itertools.count()

    async def read() -> None:
        async for reply in stream:
            waiting.pop(reply.infer_response.id).set_result(reply)

    reader = asyncio.create_task(read())

    async def call(rows: np.ndarray) -> float:
        request = pb_request(rows)
        request.id = str(next(ids))
        answer = waiting[request.id] = asyncio.get_running_loop().create_future()
        async with write_lock:
            await stream.write(request)
        reply = await answer
        if reply.error_message:
            raise RuntimeError(reply.error_message)
        raw = reply.infer_response.raw_output_contents[0]
        return float(np.frombuffer(raw, dtype=np.float32)[0])

    async def close() -> None:
        await stream.done_writing()
        reader.cancel()
        await channel.close()

    return call, close


async def http_binary(url: str) -> Client:
    """One keep-alive connection per caller in flight (HTTP/1.1 has no multiplexing)."""
    parts = urlsplit(url)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": INPUT,
                    "shape": [1, WIDTH],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": WIDTH * 4},
                }
            ],
            "outputs": [{"name": OUTPUT, "parameters": {"binary_data": True}}],
        }
    ).encode()
    head = (
        f"POST /v2/models/{MODEL}/versions/{VERSION}/infer HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nInference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + WIDTH * 4}\r\n\r\n"
    ).encode() + header

    async def call(rows: np.ndarray) -> float:
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            opened.append(writer)
        writer.write(head + rows.tobytes())
        status_and_headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        fields = {
            name.strip().lower(): value.strip()
            for name, _, value in (
                line.partition(":") for line in status_and_headers.split("\r\n")[1:]
            )
        }
        body = await reader.readexactly(int(fields["content-length"]))
        idle.append((reader, writer))
        if not status_and_headers.startswith("HTTP/1.1 200"):
            raise RuntimeError(body.decode(errors="replace"))
        offset = int(fields["inference-header-content-length"])
        return float(np.frombuffer(body[offset : offset + 4], dtype=np.float32)[0])

    async def close() -> None:
        for writer in opened:
            writer.close()

    return call, close


async def measure(
    make: Callable[[str], Awaitable[Client]],
    url: str,
    calls: int,
    gap_s: float,
    in_flight: int,
    argument: Callable[[int], Any] = row,
) -> tuple[float, float]:
    """(CPU ms per call, median latency ms); ``in_flight`` callers share the client; call
    ``i`` gets ``argument(i)``."""
    call, close = await make(url)
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for i in range(first, calls, in_flight):
            started = time.perf_counter()
            await call(argument(i))
            latencies.append(time.perf_counter() - started)
            if gap_s:
                await asyncio.sleep(gap_s)

    try:
        for i in range(50):  # connection set up, first-call costs
            await call(argument(i))
        cpu0 = time.process_time()
        await asyncio.gather(*(caller(n) for n in range(in_flight)))
        cpu = time.process_time() - cpu0
    finally:
        await close()
    return cpu / calls * 1000, statistics.median(latencies) * 1000


async def sleep_only(calls: int, gap_s: float) -> float:
    cpu0 = time.process_time()
    for _ in range(calls):
        await asyncio.sleep(gap_s)
    return (time.process_time() - cpu0) / calls * 1000


Results = dict[tuple[str, float], list[tuple[float, float]]]
"""(client, pause s) -> [(CPU ms per call, median latency ms)] per round."""


def run_rounds(
    targets: dict[str, tuple[Callable[[str], Awaitable[Client]], str]],
    rounds: int,
    calls: int,
    gaps: tuple[float, ...],
    in_flight: int,
) -> tuple[Results, list[float]]:
    """Every client (maker, URL) at every pause, in alternating rounds; also the CPU of the
    pause alone per round (``sleeps``) when there is one."""
    results: Results = {}
    sleeps: list[float] = []
    for n in range(rounds):
        for name, (make, url) in targets.items():
            for gap in gaps:
                figures = uvloop.run(measure(make, url, calls, gap, in_flight))
                results.setdefault((name, gap), []).append(figures)
                print(
                    f"round {n + 1} {name:>28} gap {gap * 1000:g} ms: "
                    f"{figures[0]:.3f} ms CPU, {figures[1]:.3f} ms latency",
                    flush=True,
                )
        if len(gaps) > 1:
            sleeps.append(uvloop.run(sleep_only(calls, gaps[1])))
    return results, sleeps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.triton_call_cost", description=__doc__
    )
    parser.add_argument("--calls", type=int, default=1000, help="calls per client and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause after each call")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="callers sharing one client; with more than 1 only back-to-back calls are made",
    )
    args = parser.parse_args(argv)
    triton = TritonServer(
        without_queue_policy(ROOT / "model_repository", Path(tempfile.mkdtemp(prefix="gw-cc-"))),
        cache_size_bytes=0,
    )
    clients = {
        "tritonclient aio": (tritonclient_aio, "grpc"),
        "grpc.aio unary (gateway)": (grpc_unary, "grpc"),
        "grpc.aio stream": (grpc_stream, "grpc"),
        "HTTP/1.1 binary": (http_binary, "http"),
    }
    gaps = (0.0, args.gap_ms / 1000) if args.in_flight == 1 else (0.0,)
    try:
        triton.start()
        urls = {"grpc": triton.grpc_url, "http": triton.http_url}
        targets = {name: (make, urls[kind]) for name, (make, kind) in clients.items()}
        results, sleeps = run_rounds(targets, args.rounds, args.calls, gaps, args.in_flight)
    finally:
        triton.stop()
    print(
        f"\nMedians of {args.rounds} rounds, {args.calls} single-row calls each, "
        f"{args.in_flight} in flight"
    )
    if len(gaps) == 1:
        print("\n| client | CPU ms/call | latency ms |\n|---|---:|---:|")
        for name in clients:
            b2b = results[(name, gaps[0])]
            print(
                f"| {name} | {statistics.median(r[0] for r in b2b):.3f} "
                f"| {statistics.median(r[1] for r in b2b):.2f} |"
            )
        return 0
    pause = statistics.median(sleeps)
    print(f"(sleep only, {args.gap_ms:g} ms: {pause:.3f} ms CPU per pause)\n")
    print(
        f"| client | CPU ms/call, back to back | latency ms | CPU ms/call, {args.gap_ms:g} ms "
        "pauses, minus the pause | latency ms |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in clients:
        b2b, paused = results[(name, gaps[0])], results[(name, gaps[1])]
        print(
            f"| {name} | {statistics.median(r[0] for r in b2b):.3f} "
            f"| {statistics.median(r[1] for r in b2b):.2f} "
            f"| {statistics.median(r[0] for r in paused) - pause:.3f} "
            f"| {statistics.median(r[1] for r in paused):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
