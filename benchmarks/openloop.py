"""Open-loop fixed-rate HTTP load generator (wrk2 is not installed here).

Requests are *scheduled* at start + i/rate regardless of how fast answers come back, and the
latency of each is measured from its scheduled time (no coordinated omission). Raw asyncio
streams over a pool of keep-alive HTTP/1.1 connections keep the generator's own CPU cost low.

Run: ``python -m benchmarks.openloop URL KIND --rate 500 --duration 8`` prints one JSON line.
KIND: triton | bypass | hit | ref (body generator, same shapes as the wrk Lua scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

N_ENTITIES = 10_000


def body_for(kind: str, i: int, hit_entities: int) -> tuple[str, bytes]:
    if kind == "triton":
        amount = 1.0 + i * 0.013
        data = [amount, 14, 0.2, 3.0, 1.5, 1, 0, 0, 1, 4, 55.0, 900, 0, 0]
        payload = {
            "inputs": [{"name": "features", "shape": [1, 14], "datatype": "FP32", "data": data}]
        }
        return "/v2/models/fraud_scorer/infer", json.dumps(payload).encode()
    if kind == "hit":
        entity = f"card-{i % hit_entities + 1:06d}"
        return "/v1/models/fraud_scorer/predict", json.dumps({"entity_id": entity}).encode()
    entity = f"card-{i % N_ENTITIES + 1:06d}"
    body = {"entity_id": entity, "cache": "bypass"}
    return "/v1/models/fraud_scorer/predict", json.dumps(body).encode()


async def _request(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str,
    body: bytes,
    extra_headers: str = "",
) -> int:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{extra_headers}Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


async def run(
    url: str, kind: str, rate: float, duration: float, pool: int, hit: int, api_key: str = ""
) -> dict:
    extra_headers = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns: asyncio.Queue = asyncio.Queue()
    for _ in range(pool):
        conns.put_nowait(await asyncio.open_connection(host, port))
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        path, body = body_for(kind, i, hit)
        reader, writer = await conns.get()
        try:
            status = await _request(reader, writer, host, path, body, extra_headers)
            if status != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        latencies.append(time.perf_counter() - scheduled)
        conns.put_nowait((reader, writer))

    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not conns.empty():
        conns.get_nowait()[1].close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": len(latencies) / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": latencies[-1] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("kind", choices=["triton", "bypass", "hit", "ref"])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--hit-entities", type=int, default=2000)
    parser.add_argument("--api-key", default="", help="sent as 'Authorization: Bearer'")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        run(
            args.url,
            args.kind,
            args.rate,
            args.duration,
            args.pool,
            args.hit_entities,
            args.api_key,
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
