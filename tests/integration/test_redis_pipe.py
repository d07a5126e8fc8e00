"""gateway.redis_pipe against a real Redis: order, errors, broken and stalled connections,
concurrent exchanges on one connection, callers that stop waiting, credentials, databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devstack.redis_server import RedisServer
from gateway.redis_pipe import RedisPipe
from gateway.resp import HmgetCommand, bulk, pack_get, pack_set_ex
from triton_launcher.ports import free_port

pytestmark = pytest.mark.integration


def blpop(key: str, seconds: float) -> bytes:
    """BLPOP on an empty list: Redis holds the reply for ``seconds``."""
    return b"*3\r\n$5\r\nBLPOP\r\n" + bulk(key.encode()) + bulk(b"%g" % seconds)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def connected_clients(client: redis.Redis) -> int:
    return int((await client.info("clients"))["connected_clients"])


async def test_replies_come_back_in_order_and_an_error_reply_keeps_the_connection_in_step(
    client: redis.Redis,
) -> None:
    pipe = RedisPipe(client)
    try:
        await client.hset("pipe:h", mapping={"a": "1", "b": "2"})
        await client.set("pipe:s", "x")
        replies = await pipe.roundtrip(
            [
                HmgetCommand(["a", "missing", "b"]).pack("pipe:h"),
                pack_set_ex("pipe:k", b"v", 60),
                pack_get("pipe:k"),
                pack_get("pipe:nothing"),
            ]
        )
        assert replies == [[b"1", None, b"2"], b"OK", b"v", None]
        assert 0 < await client.ttl("pipe:k") <= 60

        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pipe.roundtrip([pack_get("pipe:h"), pack_get("pipe:s")])
        # Both replies were read: the next exchange is not off by one.
        assert await pipe.roundtrip([pack_get("pipe:s")]) == [b"x"]
    finally:
        await client.delete("pipe:h", "pipe:s", "pipe:k")
        await pipe.aclose()


async def test_concurrent_exchanges_share_one_connection_and_each_gets_its_own_replies(
    client: redis.Redis,
) -> None:
    pipe = RedisPipe(client)
    keys = [f"pipe:c{i}" for i in range(300)]
    try:
        await client.mset({k: k.encode() for k in keys})
        before = await connected_clients(client)
        replies = await asyncio.gather(
            *(pipe.roundtrip([pack_get(k), pack_get("pipe:nothing"), pack_get(k)]) for k in keys)
        )
        assert replies == [[k.encode(), None, k.encode()] for k in keys]
        assert await connected_clients(client) == before + 1
    finally:
        await client.delete(*keys)
        await pipe.aclose()
    assert await connected_clients(client) == before


async def test_a_connection_killed_by_the_server_is_retried_once(
    client: redis.Redis,
) -> None:
    pipe = RedisPipe(client)
    try:
        await client.set("pipe:r", "1")
        assert await pipe.roundtrip([pack_get("pipe:r")]) == [b"1"]
        # Redis drops every client connection, as on a restart; the pipe's is now dead.
        await client.client_kill_filter(_type="normal", skipme=True)
        assert await pipe.roundtrip([pack_get("pipe:r")]) == [b"1"]
    finally:
        await client.delete("pipe:r")
        await pipe.aclose()


async def test_replies_larger_than_one_socket_read_are_reassembled(client: redis.Redis) -> None:
    pipe = RedisPipe(client)
    big = bytes(range(256)) * 2048  # 512 KiB: many reads of the socket
    try:
        await pipe.roundtrip([pack_set_ex(f"pipe:big{i}", big, 60) for i in range(3)])
        replies = await pipe.roundtrip([pack_get(f"pipe:big{i}") for i in range(3)] * 2)
        assert replies == [big] * 6
        assert await pipe.roundtrip([pack_get("pipe:nothing")]) == [None]
    finally:
        await client.delete(*(f"pipe:big{i}" for i in range(3)))
        await pipe.aclose()


async def test_a_stalled_reply_times_out_with_everything_behind_it_and_is_never_read_later(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2)
    pipe = RedisPipe(client)
    try:
        await client.set("pipe:t", "1")
        started = time.monotonic()
        stalled = pipe.roundtrip([blpop("pipe:nil", 0.3)])
        behind = pipe.roundtrip([pack_get("pipe:t")])
        results = await asyncio.gather(stalled, behind, return_exceptions=True)
        # Both are retried once on a fresh connection, where the BLPOP stalls again ahead of
        # the GET: replies come in order, so an exchange waits for those sent before it (on
        # the predict path, only a stalled Redis stalls a reply, and then it stalls them all).
        assert [type(r) for r in results] == [RedisTimeoutError, RedisTimeoutError]
        assert 0.35 < time.monotonic() - started < 1.0
        # Had a late nil reply stayed on the connection, this would read it.
        assert await pipe.roundtrip([pack_get("pipe:t")]) == [b"1"]
    finally:
        await client.delete("pipe:t")
        await pipe.aclose()
        await client.aclose()


async def test_a_caller_that_stops_waiting_leaves_the_connection_in_step(
    client: redis.Redis,
) -> None:
    pipe = RedisPipe(client)
    try:
        await client.set("pipe:w", "w")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pipe.roundtrip([blpop("pipe:nil", 0.2)])
        # The abandoned BLPOP's nil reply arrives later and is dropped, not handed on.
        assert await pipe.roundtrip([pack_get("pipe:w")]) == [b"w"]
        assert await pipe.roundtrip([pack_get("pipe:w"), pack_get("pipe:nothing")]) == [
            b"w",
            None,
        ]
    finally:
        await client.delete("pipe:w")
        await pipe.aclose()


async def test_no_redis_fails_fast_for_every_waiting_caller_and_recovers() -> None:
    server = RedisServer(port=free_port())
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    pipe = RedisPipe(client)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(pipe.roundtrip([pack_get("pipe:x")]) for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        assert "Error connecting to Redis" in str(results[0])
        assert time.monotonic() - started < 0.5
        server.start()
        assert await pipe.roundtrip([pack_get("pipe:x")]) == [None]
    finally:
        await pipe.aclose()
        await client.aclose()
        server.stop()


async def test_password_user_and_database_come_from_the_client_settings() -> None:
    with RedisServer(password="s3cret-pw") as server:
        url = f"redis://127.0.0.1:{server.port}/3"
        admin = redis.Redis.from_url(url, password="s3cret-pw")
        await admin.acl_setuser("scorer", enabled=True, passwords=["+scorer-pw"], keys=["*"],
                                commands=["+@all"])  # fmt: skip
        as_default = RedisPipe(redis.Redis.from_url(url, password="s3cret-pw"))
        as_user = RedisPipe(redis.Redis.from_url(url, username="scorer", password="scorer-pw"))
        wrong = RedisPipe(redis.Redis.from_url(url, password="not-it"))
        anonymous = RedisPipe(redis.Redis.from_url(url))
        try:
            await as_default.roundtrip([pack_set_ex("pipe:db", b"3", 60)])
            assert await admin.get("pipe:db") == b"3"  # database 3, not 0
            assert await as_user.roundtrip([pack_get("pipe:db")]) == [b"3"]
            with pytest.raises(RedisConnectionError, match="refused the connection") as refused:
                await wrong.roundtrip([pack_get("pipe:db")])
            assert "not-it" not in str(refused.value)
            with pytest.raises(RedisConnectionError, match="Authentication required"):
                await anonymous.roundtrip([pack_get("pipe:db")])
        finally:
            for pipe in (as_default, as_user, wrong, anonymous):
                await pipe.aclose()
            await admin.aclose()


def test_the_same_under_uvloop_as_the_gateway_runs_it(redis_server: RedisServer) -> None:
    """The tests above run on asyncio's loop; the gateway's runs on uvloop, whose transports
    differ (no asyncio.Transport base class, their own close and write paths)."""

    async def scenario() -> None:
        client = redis.Redis.from_url(redis_server.url, socket_timeout=0.2)
        pipe = RedisPipe(client)
        try:
            await client.set("pipe:u", "u")
            replies = await asyncio.gather(
                *(pipe.roundtrip([pack_get("pipe:u")]) for _ in range(50))
            )
            assert replies == [[b"u"]] * 50
            await client.client_kill_filter(_type="normal", skipme=True)
            assert await pipe.roundtrip([pack_get("pipe:u")]) == [b"u"]
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await pipe.roundtrip([blpop("pipe:nil", 0.1)])
            assert await pipe.roundtrip([pack_get("pipe:u")]) == [b"u"]
            with pytest.raises(RedisTimeoutError):
                await pipe.roundtrip([blpop("pipe:nil", 0.3)])
            assert await pipe.roundtrip([pack_get("pipe:u")]) == [b"u"]
        finally:
            await client.delete("pipe:u")
            await pipe.aclose()
            await client.aclose()

    # Its own thread: the test session's loop belongs to this one.
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        executor.submit(uvloop.run, scenario()).result(timeout=30)
