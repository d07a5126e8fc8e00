"""gateway.resp against a real Redis: replies in order, error replies, broken connections."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devstack.redis_server import RedisServer
from gateway.resp import HmgetCommand, pack_get, pack_set_ex, roundtrip

pytestmark = pytest.mark.integration


async def test_replies_come_back_in_order_and_an_error_reply_keeps_the_connection_in_step(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        await client.hset("resp:h", mapping={"a": "1", "b": "2"})
        await client.set("resp:s", "x")
        replies = await roundtrip(
            client,
            [
                HmgetCommand(["a", "missing", "b"]).pack("resp:h"),
                pack_set_ex("resp:k", b"v", 60),
                pack_get("resp:k"),
                pack_get("resp:nothing"),
            ],
        )
        assert replies == [[b"1", None, b"2"], b"OK", b"v", None]
        assert 0 < await client.ttl("resp:k") <= 60

        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await roundtrip(client, [pack_get("resp:h"), pack_get("resp:s")])
        # Both replies were read: the next exchange on the pooled connection is not off by one.
        assert await roundtrip(client, [pack_get("resp:s")]) == [b"x"]
    finally:
        await client.delete("resp:h", "resp:s", "resp:k")
        await client.aclose()


async def test_a_connection_killed_by_the_server_is_retried_once(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        await client.set("resp:r", "1")
        assert await roundtrip(client, [pack_get("resp:r")]) == [b"1"]
        # Redis drops every client connection, as on a restart; the pooled one is now dead.
        killer = redis.Redis.from_url(redis_server.url)
        await killer.client_kill_filter(_type="normal", skipme=True)
        await killer.aclose()
        assert await roundtrip(client, [pack_get("resp:r")]) == [b"1"]
    finally:
        await client.delete("resp:r")
        await client.aclose()


async def test_replies_larger_than_one_socket_read_are_reassembled(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    big = bytes(range(256)) * 2048  # 512 KiB: many reads of redis-py's 64 KiB buffer
    try:
        await roundtrip(client, [pack_set_ex(f"resp:big{i}", big, 60) for i in range(3)])
        replies = await roundtrip(client, [pack_get(f"resp:big{i}") for i in range(3)] * 2)
        assert replies == [big] * 6
        assert await roundtrip(client, [pack_get("resp:nothing")]) == [None]
    finally:
        await client.delete(*(f"resp:big{i}" for i in range(3)))
        await client.aclose()


async def test_a_stalled_reply_times_out_and_the_connection_is_not_reused(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2)
    try:
        # BLPOP on an empty list holds the reply past the socket timeout (the retry's too).
        with pytest.raises(RedisTimeoutError):
            await roundtrip(client, [b"*3\r\n$5\r\nBLPOP\r\n$8\r\nresp:nil\r\n$3\r\n0.3\r\n"])
        await client.set("resp:t", "1")
        # Had the late nil reply stayed on a pooled connection, this would read it.
        assert await roundtrip(client, [pack_get("resp:t")]) == [b"1"]
    finally:
        await client.delete("resp:t")
        await client.aclose()
