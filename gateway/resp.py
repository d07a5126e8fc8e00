"""Pre-packed Redis commands for the predict path (sent by gateway/redis_pipe.py).

The predict path sends the same few command shapes millions of times: HMGET of a model's
fixed field list, GET, SET ... EX. redis-py's Pipeline packs every argument in Python, runs
each reply through a response callback, and resets itself through ``asyncio.shield`` after
every call; in a py-spy profile of the hit path that was most of the Redis cost
(docs/benchmark.md). Here the constant part of each command (the field list) is packed once
per model and a request only adds its keys.
"""

from __future__ import annotations

from collections.abc import Sequence


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class HmgetCommand:
    """``HMGET <key> <fields...>`` with the field list packed once."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        self._tail = b"".join(bulk(f.encode()) for f in fields)

    def pack(self, key: str) -> bytes:
        return self._head + bulk(key.encode()) + self._tail


def pack_get(key: str) -> bytes:
    return b"*2\r\n$3\r\nGET\r\n" + bulk(key.encode())


def pack_set_ex(key: str, value: bytes, ttl_s: int) -> bytes:
    return b"*5\r\n$3\r\nSET\r\n%s%s$2\r\nEX\r\n%s" % (
        bulk(key.encode()),
        bulk(value),
        bulk(b"%d" % ttl_s),
    )
