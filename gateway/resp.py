"""Pre-packed Redis commands sent on a pooled connection, without redis-py's Pipeline.

The predict path sends the same few command shapes millions of times: HMGET of a model's
fixed field list, GET, SET ... EX. redis-py's Pipeline packs every argument in Python, runs
each reply through a response callback, and resets itself through ``asyncio.shield`` after
every call; in a py-spy profile of the hit path that was most of the Redis cost
(docs/benchmark.md). Here the constant part of each command (the field list) is packed once
per model, a request only adds its keys, and the replies come straight from the parser
(hiredis). Connections still come from redis-py's pool, with its timeouts, and get the same
single immediate retry on a broken connection as every other call (``open_redis``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


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


async def roundtrip(client: redis.Redis, commands: list[bytes]) -> list[Any]:
    """Send ``commands`` in one write and read one reply each (an error reply raises once
    every reply has been read, so the connection stays in step)."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        for attempt in (1, 2):
            try:
                return await _exchange(connection, commands)
            except (RedisConnectionError, RedisTimeoutError):
                # A connection a Redis restart broke: reconnect once at once, as the client's
                # Retry(NoBackoff(), 1) does for every other call.
                await connection.disconnect()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
    except ResponseError:
        raise  # every reply was read: the connection is in step and goes back to the pool
    except BaseException:
        # Cancelled or failed mid-exchange: unread replies would desync the next user.
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


async def _exchange(connection: Any, commands: list[bytes]) -> list[Any]:
    await connection.send_packed_command(b"".join(commands), check_health=False)
    if not isinstance(connection._parser, _AsyncHiredisParser):
        raise RuntimeError("redis-py is not using hiredis (a pinned dependency of the gateway)")
    parser: Any = connection._parser
    # Every reply straight from hiredis, reading the socket only when it has too few: one
    # timeout for the whole exchange, not redis-py's coroutine and timeout per reply (measured
    # in docs/measurements.md). redis-py's own parser attributes, so its version is pinned.
    reader = parser._reader
    replies: list[Any] = []
    error: ResponseError | None = None
    try:
        async with asyncio.timeout(connection.socket_timeout):
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    await parser.read_from_socket()
                    continue
                if isinstance(reply, RedisConnectionError):
                    raise reply
                if isinstance(reply, ResponseError):
                    error = error or reply
                    reply = None
                replies.append(reply)
    except TimeoutError:
        raise RedisTimeoutError("Timeout reading from Redis") from None
    if error is not None:
        raise error
    return replies
