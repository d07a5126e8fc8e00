"""Append events to the input stream (``python -m gateway stream-produce``, tests, benchmarks).

Every append carries ``MAXLEN ~ input_maxlen``: the stream stays bounded, trimmed in whole
macro-nodes (cheap), never below the cap. Entries trimmed before a worker acknowledged them are
lost, so the cap must exceed the largest backlog the lane should absorb.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.stream.events import encode_event
from gateway.stream.log import StreamUnavailable

Fields = Mapping[str, str | bytes]


async def append_events(
    client: redis.Redis,
    stream: str,
    events: Iterable[Fields],
    *,
    maxlen: int,
    chunk_size: int = 500,
) -> list[str]:
    """XADD each event (pipelined in chunks); returns the entry ids in order."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    pending = 0
    try:
        for fields in events:
            pipe.xadd(stream, dict[Any, Any](fields), maxlen=maxlen, approximate=True)
            pending += 1
            if pending == chunk_size:
                ids.extend(_text(i) for i in await pipe.execute())
                pending = 0
        if pending:
            ids.extend(_text(i) for i in await pipe.execute())
    except (RedisError, OSError) as e:
        raise StreamUnavailable("cannot append to the event stream") from e
    return ids


def events_from_json_lines(lines: Iterable[str], default_model: str | None) -> Iterator[Fields]:
    """``{"model"?, "entity_id", "features"?, "event_time"?, "event_id"?}`` per line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise ValueError(f"line {number}: not JSON ({e})") from e
        if not isinstance(body, dict):
            raise ValueError(f"line {number}: not a JSON object")
        model = body.get("model", default_model)
        if not model or "entity_id" not in body:
            raise ValueError(f"line {number}: needs entity_id and model (or --model)")
        yield encode_event(
            str(model),
            str(body["entity_id"]),
            features=body.get("features"),
            event_time=body.get("event_time"),
            event_id=body.get("event_id"),
        )


def demo_events(model: str, count: int, *, entities: int, seed: int = 0) -> Iterator[Fields]:
    """Card transactions for the demo cards (``card-000001`` …): amount, hour, channel."""
    rng = random.Random(seed)
    for _ in range(count):
        card = f"card-{rng.randint(1, entities):06d}"
        features: dict[str, Any] = {
            "amount": round(rng.lognormvariate(3.5, 1.2), 2),
            "hour_of_day": rng.randint(0, 23),
            "is_online": rng.random() < 0.4,
        }
        yield encode_event(model, card, features=features)


async def produce(
    client: redis.Redis,
    stream: str,
    events: Iterable[Fields],
    *,
    maxlen: int,
    rate: float | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    """Append all events, at most ``rate`` per second when given; returns the count."""
    started = time.perf_counter()
    total = 0
    batch: list[Fields] = []
    step = 100 if rate is None else max(1, int(rate / 100))
    for fields in events:
        batch.append(fields)
        if len(batch) >= step:
            total += len(await append_events(client, stream, batch, maxlen=maxlen))
            batch = []
            if rate is not None:
                ahead = total / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    if batch:
        total += len(await append_events(client, stream, batch, maxlen=maxlen))
    print(
        f"appended {total} events to {stream} in {time.perf_counter() - started:.2f}s",
        file=out,
        flush=True,
    )
    return total


def read_lines(path: Path) -> Iterator[str]:
    if str(path) == "-":
        yield from sys.stdin
        return
    with path.open() as handle:
        yield from handle


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
