"""One pipelined Redis connection for the predict path's exchanges.

A lookup or write-back is a few pre-packed commands (gateway/resp.py) sent in one write; the
replies come back in order. Through redis-py every exchange checked a connection out of the
pool (a condition, a timeout scope, and a health check that tries a zero-timeout read and
cancels it), ran redis-py's send and read coroutines, and checked it back in. When requests
come one at a time (a few hundred a second: each pays for its own exchange) that machinery
cost ~0.4 ms of CPU per exchange on the dev box, against ~0.15 ms for the exchange itself
(docs/measurements.md). Here exchanges are queued on one connection whose protocol feeds every
reply to hiredis and hands each exchange its replies when the last one is in: no checkout, no
coroutine per read, nothing to desynchronize (a caller that stops waiting leaves its exchange
in the queue; its replies are read and dropped).

Bounds, as with the pool: connecting takes at most the client's connect timeout, and an
exchange whose replies have not all arrived within the client's socket timeout fails with
``TimeoutError``, together with every exchange behind it, and the connection is closed (a
late reply must never answer the next exchange). An exchange that fails because the
connection broke or timed out is retried once, at once, on a fresh connection, as redis-py's
``Retry(NoBackoff(), 1)`` does for every other call (``gateway.store.open_redis``).

Where to connect, the credentials and the database come from the redis-py client's own pool
settings, so every URL form the client accepts (``redis://``, ``rediss://``, ``unix://``)
means the same here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
import redis.asyncio as redis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.resp import bulk

_NOT_ENOUGH_DATA = object()


class RedisPipe:
    """Exchanges of pre-packed commands over one lazily (re)opened pipelined connection."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        # redis-py's own parsing of the client's settings; constructing one connects nothing.
        self._template: Any = pool.connection_class(**pool.connection_kwargs)
        self._reply_timeout_s: float | None = self._template.socket_timeout
        self._connect_timeout_s: float | None = self._template.socket_connect_timeout
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Task[_PipeProtocol] | None = None
        self._closed = False

    async def roundtrip(self, commands: list[bytes]) -> list[Any]:
        """Send ``commands`` in one write and return one reply each. An error reply raises
        (the first one, as redis-py's exception for it) after every reply was read; the other
        replies of that exchange are lost."""
        for attempt in (1, 2):
            protocol = self._protocol
            if protocol is None or protocol.closed:
                protocol = await self._connection()
            try:
                replies = await protocol.exchange(commands)
            except (RedisConnectionError, RedisTimeoutError):
                # The connection is closed by now (a broken one, or one a late reply would
                # desynchronize): one immediate retry on a fresh one.
                if attempt == 2:
                    raise
                continue
            for reply in replies:
                if isinstance(reply, RedisError):  # an error reply, as redis-py classifies it
                    raise reply
            return replies
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.close(RedisConnectionError, "Redis pipe closed")
            self._protocol = None
            await asyncio.sleep(0)  # lets the transport finish closing in this loop

    async def _connection(self) -> _PipeProtocol:
        """The open connection; concurrent callers share one attempt to open it (and its
        failure: while Redis is down they all fail at once instead of queueing to retry)."""
        if self._closed:
            raise RedisConnectionError("Redis pipe closed")
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
            self._connecting = task
        # Shielded: one caller's deadline must not abort the attempt the others wait on.
        return await asyncio.shield(task)

    def _opened(self, task: asyncio.Task[_PipeProtocol]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        error = task.exception()  # retrieved here even when every waiter gave up
        if error is None:
            self._protocol = task.result()
            if self._closed:
                self._protocol.close(RedisConnectionError, "Redis pipe closed")

    async def _open(self) -> _PipeProtocol:
        template = self._template
        loop = asyncio.get_running_loop()
        where = (
            template.path
            if isinstance(template, UnixDomainSocketConnection)
            else f"{template.host}:{template.port}"
        )
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if isinstance(template, UnixDomainSocketConnection):
                    _, protocol = await loop.create_unix_connection(
                        lambda: _PipeProtocol(self._reply_timeout_s), template.path
                    )
                else:
                    ssl = (
                        template.ssl_context.get() if isinstance(template, SSLConnection) else None
                    )
                    _, protocol = await loop.create_connection(
                        lambda: _PipeProtocol(self._reply_timeout_s),
                        template.host,
                        template.port,
                        ssl=ssl,
                    )
                try:
                    await self._handshake(protocol)
                except BaseException:
                    protocol.close(RedisConnectionError, "Redis connection handshake failed")
                    raise
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout connecting to Redis at {where}") from None
        except OSError as e:
            raise RedisConnectionError(f"Error connecting to Redis at {where}: {e}") from e
        return protocol

    async def _handshake(self, protocol: _PipeProtocol) -> None:
        template = self._template
        commands: list[bytes] = []
        username, password = template.username, template.password
        if template.credential_provider is not None:
            credentials = await template.credential_provider.get_credentials_async()
            username, password = (None, *credentials) if len(credentials) == 1 else credentials
        if password is not None:
            auth = [b"AUTH", *([username.encode()] if username else []), password.encode()]
            commands.append(b"*%d\r\n%s" % (len(auth), b"".join(bulk(a) for a in auth)))
        if template.db:
            commands.append(b"*2\r\n$6\r\nSELECT\r\n" + bulk(b"%d" % int(template.db)))
        if not commands:
            return
        replies = await protocol.exchange(commands)
        for reply in replies:
            if isinstance(reply, RedisError):
                # A wrong password or database is a connection failure, as redis-py has it
                # (its AuthenticationError is a ConnectionError); the reply names no secret.
                raise RedisConnectionError(f"Redis refused the connection: {reply}")


class _Exchange:
    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, deadline: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.deadline = deadline


class _PipeProtocol(asyncio.Protocol):
    """One connection: exchanges queued in send order, each completed by its last reply."""

    def __init__(self, reply_timeout_s: float | None) -> None:
        self.closed = False
        self._reply_timeout_s = reply_timeout_s
        self._transport: asyncio.Transport | None = None
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_NOT_ENOUGH_DATA,
        )
        self._pending: deque[_Exchange] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have write().
        self._transport = cast(asyncio.Transport, transport)

    def exchange(self, commands: list[bytes]) -> asyncio.Future[list[Any]]:
        """Queue an exchange; the future gets every reply, error replies as exceptions."""
        if self.closed or self._transport is None:
            raise RedisConnectionError("Connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        timeout = self._reply_timeout_s
        deadline = float("inf") if timeout is None else loop.time() + timeout
        self._pending.append(_Exchange(future, len(commands), deadline))
        self._transport.write(b"".join(commands))
        if self._timer is None and timeout is not None:
            # One timer for the whole queue, set for its oldest exchange: replies come in
            # order, so if that one is not late, none behind it is.
            self._timer = loop.call_at(deadline, self._check_late)
        return future

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as e:
                self.close(RedisConnectionError, f"Protocol error from Redis: {e}")
                return
            if reply is _NOT_ENOUGH_DATA:
                return
            if not pending:
                self.close(RedisConnectionError, "Redis sent a reply nobody asked for")
                return
            head = pending[0]
            head.replies.append(reply)
            if len(head.replies) == head.expected:
                pending.popleft()
                if not head.future.done():  # its caller may have stopped waiting
                    head.future.set_result(head.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError, "Connection closed by server.")

    def close(self, error: type[Exception], message: str) -> None:
        """Fail every queued exchange with ``error(message)`` and close the connection."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, deque()
        for exchange in pending:
            if not exchange.future.done():
                exchange.future.set_exception(error(message))
        if self._transport is not None:
            self._transport.close()

    def _check_late(self) -> None:
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0].deadline  # on the loop's clock, as the timer is
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self.close(RedisTimeoutError, "Timeout reading from Redis")
            return
        self._timer = loop.call_at(deadline, self._check_late)
