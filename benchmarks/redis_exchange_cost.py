"""``python -m benchmarks.redis_exchange_cost``: what one Redis lookup costs the calling process.

Starts a Redis with one entity's features and cached prediction and, in this one process,
makes ``--calls`` lookups (the predict path's: an HMGET of the model's feature fields and a
GET of the cached prediction) with each client, in alternating rounds: back to back, and (one
caller only) with a ``--gap-ms`` pause after each (a gateway at a moderate rate, where a
request rarely shares its exchange). Reports the median over rounds of this process's CPU per
lookup (``time.process_time()``) and of the median latency; ``sleep only`` is the pause's own
cost, subtracted from the paused figures. Clients:

* ``redis-py pipeline``: ``client.pipeline(transaction=False)``, as a first gateway would;
* ``redis-py pool + pre-packed``: the same pre-packed commands sent on a connection checked
  out of redis-py's pool for each exchange (the gateway's predict path until
  ``gateway/redis_pipe.py``), replies read from its hiredis reader;
* ``RedisPipe``: ``gateway/redis_pipe.py``, one pipelined connection (the gateway now).

Loopback only; Redis is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
import uvloop
from redis._parsers.hiredis import NOT_ENOUGH_DATA

from benchmarks.triton_call_cost import Client, run_rounds
from devstack.redis_server import RedisServer
from gateway.redis_pipe import RedisPipe
from gateway.resp import HmgetCommand, pack_get

FIELDS = [f"f{i}" for i in range(14)] + ["_ts"]
FEATURES, PREDICTION = "bench:features", "bench:prediction"
HMGET = HmgetCommand(FIELDS)


def _client(url: str) -> redis.Redis:
    # The gateway's settings (gateway.store.open_redis), so each client has the same bounds.
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=1.0, socket_timeout=0.25, socket_connect_timeout=0.5
    )
    return redis.Redis(connection_pool=pool)


async def redis_py_pipeline(url: str) -> Client:
    client = _client(url)

    async def call(_: object) -> object:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(FEATURES, FIELDS)
        pipe.get(PREDICTION)
        return await pipe.execute()

    return call, client.aclose


async def pool_prepacked(url: str) -> Client:
    client = _client(url)
    pool = client.connection_pool
    commands = [HMGET.pack(FEATURES), pack_get(PREDICTION)]

    async def call(_: object) -> object:
        connection: Any = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join(commands), check_health=False)
            parser = connection._parser
            replies: list[Any] = []
            async with asyncio.timeout(connection.socket_timeout):
                while len(replies) < len(commands):
                    reply = parser._reader.gets()
                    if reply is NOT_ENOUGH_DATA:
                        await parser.read_from_socket()
                    else:
                        replies.append(reply)
            return replies
        finally:
            await pool.release(connection)

    return call, client.aclose


async def redis_pipe(url: str) -> Client:
    client = _client(url)
    pipe = RedisPipe(client)
    commands = [HMGET.pack(FEATURES), pack_get(PREDICTION)]

    async def call(_: object) -> object:
        return await pipe.roundtrip(commands)

    async def close() -> None:
        await pipe.aclose()
        await client.aclose()

    return call, close


async def seed(url: str) -> None:
    client = redis.Redis.from_url(url)
    await client.hset(FEATURES, mapping={f: "0.5" for f in FIELDS})
    await client.set(PREDICTION, b'{"s":[0.1],"v":"1","t":1.0,"f":1.0}')
    await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.redis_exchange_cost", description=__doc__
    )
    parser.add_argument("--calls", type=int, default=2000, help="lookups per client and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause after each lookup")
    parser.add_argument(
        "--in-flight", type=int, default=1, help="concurrent callers (more than 1: no pauses)"
    )
    args = parser.parse_args(argv)
    clients: dict[str, Callable[[str], Awaitable[Client]]] = {
        "redis-py pipeline": redis_py_pipeline,
        "redis-py pool + pre-packed": pool_prepacked,
        "RedisPipe (the gateway)": redis_pipe,
    }
    gaps = (0.0, args.gap_ms / 1000) if args.in_flight == 1 else (0.0,)
    with RedisServer() as server:
        uvloop.run(seed(server.url))
        targets = {name: (make, server.url) for name, make in clients.items()}
        results, sleeps = run_rounds(targets, args.rounds, args.calls, gaps, args.in_flight)
    pause = statistics.median(sleeps) if sleeps else 0.0
    print(
        f"\nMedians of {args.rounds} rounds, {args.calls} lookups each, {args.in_flight} in flight"
    )
    if sleeps:
        print(f"(sleep only, {args.gap_ms:g} ms: {pause:.3f} ms CPU per pause)")
    head = "| client | CPU ms/lookup, back to back | latency ms |"
    if len(gaps) > 1:
        head += f" CPU ms/lookup, {args.gap_ms:g} ms pauses, minus the pause | latency ms |"
    print("\n" + head + "\n|---|" + "---:|" * (head.count("|") - 2))
    for name in clients:
        cells = []
        for gap in gaps:
            rows = results[(name, gap)]
            cpu = statistics.median(r[0] for r in rows) - (pause if gap else 0.0)
            cells += [f"{cpu:.3f}", f"{statistics.median(r[1] for r in rows):.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
