"""A loopback TCP proxy that holds every upstream→client chunk for ``delay_s``.

Put between the gateway and Triton it makes a real Triton slow without touching it: used to
widen the window in which concurrent misses overlap (coalescing) and to push answers past a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

from devstack.gateway_process import GatewayProcess
from triton_launcher.ports import free_port


class DelayProxy:
    def __init__(self, upstream: str, *, delay_s: float = 0.0) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.delay_s = delay_s
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, delayed=False),
            self._pipe(up_reader, writer, delayed=True),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        # Each chunk is delivered delay_s after it arrived (constant latency, order kept),
        # not delay_s after the previous one: multiplexed gRPC streams are not serialised.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                arrived, chunk = await queue.get()
                if not chunk:
                    return
                wait = arrived + (self.delay_s if delayed else 0.0) - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((loop.time(), chunk))
            queue.put_nowait((loop.time(), b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(Exception):
                writer.close()


@contextlib.contextmanager
def delayed(upstream: str, delay_s: float) -> Iterator[DelayProxy]:
    with DelayProxy(upstream, delay_s=delay_s) as proxy:
        yield proxy


@contextlib.contextmanager
def gateway_behind_proxy(
    spec_path: Path, redis_url: str, triton_grpc_url: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[GatewayProcess, DelayProxy]]:
    """A gateway whose Triton traffic goes through a ``DelayProxy``. The proxy starts without
    delay, so the gateway's start-up checks run at full speed; set ``delay_s`` after."""
    with (
        DelayProxy(triton_grpc_url) as proxy,
        GatewayProcess(
            spec_path=spec_path, redis_url=redis_url, triton_url=proxy.address, env=env
        ) as gateway,
    ):
        yield gateway, proxy
