"""Faults under load, against real servers: Redis killed and restarted, Triton stopped and
restarted, Triton slowed past the deadline. For each: no request outlives its deadline, no
500s, every answer is a correct score, a flagged ladder answer or a documented error, and the
service recovers by itself. Recovery times are printed (docs/reliability.md quotes them)."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from tests.integration.conftest import MODEL_REPOSITORY, SPEC_PATH, wait_until
from tests.integration.delay_proxy import gateway_behind_proxy
from tests.integration.helpers import TYPICAL, put_features, reference_score
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
DEADLINE_MS = 300
SERVER_SLACK_S = 0.25
"""Past the deadline, as the gateway itself measures it (its Server-Timing header): answering
the ladder, event-loop scheduling on a shared 2-core box. Every answer must be within it."""
SLACK_S = 0.6  # end to end: loopback, a shared 2-core box with the load generator on it
LATE_SHARE = 0.02
HANG_S = 8.0
"""A few answers (up to 0.7% of a run seen here) arrive 1-3.3 s late end to end while the
gateway's own time for each stays in milliseconds and a /healthz probe on another connection,
and the load generator's own event loop, never lag more than 0.1 s: this VM retransmits TCP
segments on loopback (``ss -ti`` shows retransmits on the generator's connections to the
gateway, ``nstat`` 10-12 TcpRetransSegs per run and no drop counter), and a retransmit waits
out TCP's timer (1 s, then 2 s). Late answers are allowed up to LATE_SHARE, never past HANG_S
(beyond three retransmits); the gateway's own time (SERVER_SLACK_S) is checked for every one."""
DOCUMENTED = {503, 504}


@dataclass
class Outcome:
    at: float
    status: int
    latency_s: float
    server_s: float | None = None
    """The gateway's own time (Server-Timing), None when it did not say."""
    source: str | None = None
    score: float | None = None
    retry_after: str | None = None


class Load:
    """Closed-loop load until stopped, from a process of its own, so that the test driving
    the fault (starting and stopping servers in this process) cannot delay it and be counted
    against the gateway. Outcomes stream back over a queue as they happen (``since`` and
    ``recovered_after`` watch them live)."""

    def __init__(self, gateway: GatewayProcess, entities: list[str], concurrency: int = 8) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._queue: multiprocessing.Queue[Outcome | None] = context.Queue()
        headers = {**gateway.headers, "X-Request-Timeout-Ms": str(DEADLINE_MS)}
        self._process = context.Process(
            target=_generate,
            args=(gateway.url, headers, entities, concurrency, self._stop, self._queue),
            daemon=True,
        )
        self.outcomes: list[Outcome] = []
        self._finished = False

    def __enter__(self) -> Load:
        self._process.start()
        # The fault must land on a running load: wait for its first answer.
        self._collect_until(lambda: bool(self.outcomes) or self._finished)
        assert self.outcomes, "the load generator sent nothing"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._collect_until(lambda: self._finished)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
        assert self._finished, "the load generator did not finish"

    def _collect_until(self, done: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self._collect(wait_s=0.5)

    def _collect(self, wait_s: float | None = None) -> None:
        """Take every outcome queued so far, waiting up to ``wait_s`` for the first."""
        while True:
            try:
                item = self._queue.get(block=wait_s is not None, timeout=wait_s)
            except queue.Empty:
                return
            if item is None:
                self._finished = True
                return
            self.outcomes.append(item)
            wait_s = None

    def since(self, t: float) -> list[Outcome]:
        self._collect()
        return [o for o in self.outcomes if o.at >= t]


def _generate(
    url: str,
    headers: dict[str, str],
    entities: list[str],
    concurrency: int,
    stop: Any,
    outcomes: Any,
) -> None:
    async def user(http: httpx.AsyncClient, n: int) -> None:
        i = n
        while not stop.is_set():
            entity = entities[i % len(entities)]
            i += concurrency
            started = time.perf_counter()
            try:
                # bypass: every request needs Redis and Triton, so every fault is felt.
                response = await http.post(PREDICT, json={"entity_id": entity, "cache": "bypass"})
            except httpx.HTTPError:
                # No answer at all (status 0): check_answers fails the test on it.
                outcomes.put(Outcome(time.monotonic(), 0, time.perf_counter() - started))
                continue
            outcome = Outcome(time.monotonic(), response.status_code, time.perf_counter() - started)
            outcome.server_s = server_time(response)
            if response.status_code == 200:
                body = response.json()
                outcome.source = body["source"]
                outcome.score = body["scores"]["fraud_probability"]
            outcome.retry_after = response.headers.get("retry-after")
            outcomes.put(outcome)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
            await asyncio.gather(*(user(http, n) for n in range(concurrency)))

    try:
        asyncio.run(run())
    finally:
        outcomes.put(None)


def server_time(response: httpx.Response) -> float | None:
    timing = response.headers.get("server-timing", "")
    name, _, duration = timing.partition(";dur=")
    return float(duration) / 1000 if name == "app" and duration else None


def check_answers(load: Load, expected_score: float) -> Counter[str]:
    """Every answer honest and in time; returns counts per kind for the report."""
    kinds: Counter[str] = Counter()
    assert all(o.server_s is not None for o in load.outcomes)
    server_late = [
        o for o in load.outcomes if (o.server_s or 0.0) > DEADLINE_MS / 1000 + SERVER_SLACK_S
    ]
    assert not server_late, server_late[:3]
    late = [o for o in load.outcomes if o.latency_s >= DEADLINE_MS / 1000 + SLACK_S]
    assert len(late) <= LATE_SHARE * len(load.outcomes), f"{len(late)} late: {late[:3]}"
    assert all(o.latency_s < HANG_S for o in late), late
    for o in load.outcomes:
        assert o.status != 500
        if o.status == 200:
            if o.source == "model":
                assert o.score == pytest.approx(expected_score, abs=1e-6)
            else:
                assert o.source in ("stale", "default"), o
            kinds[f"200 {o.source}"] += 1
        else:
            assert o.status in DOCUMENTED, o
            assert o.retry_after is not None, o
            kinds[str(o.status)] += 1
    return kinds


def recovered_after(load: Load, t: float) -> float:
    """Seconds from ``t`` to the first real-time answer."""
    first = wait_until(
        lambda: next((o for o in load.since(t) if o.source == "model"), None), timeout_s=15
    )
    assert isinstance(first, Outcome)
    return first.at - t


@pytest.fixture
def entities(kv: redis.Redis) -> list[str]:
    ids = [f"card-f{uuid.uuid4().hex[:10]}" for _ in range(20)]
    for entity in ids:
        put_features(kv, entity, TYPICAL)
    return ids


@pytest.fixture
def own_triton() -> Iterator[TritonServer]:
    with TritonServer(MODEL_REPOSITORY) as server:
        yield server


def test_triton_stopped_and_restarted_under_load(
    redis_server: RedisServer, own_triton: TritonServer, entities: list[str]
) -> None:
    with (
        GatewayProcess(
            spec_path=SPEC_PATH, redis_url=redis_server.url, triton_url=own_triton.grpc_url
        ) as gateway,
        Load(gateway, entities) as load,
    ):
        time.sleep(1.0)
        own_triton.stop()
        down_at = time.monotonic()
        time.sleep(2.0)
        own_triton.start()
        up_at = time.monotonic()
        recovery_s = recovered_after(load, up_at)
    kinds = check_answers(load, reference_score(TYPICAL))
    during = Counter(o.source for o in load.outcomes if down_at + 0.2 < o.at < up_at)
    # The ladder answered: the last written-back prediction (stale, flagged) or the default.
    assert during
    assert set(during) <= {"stale", "default"}, during
    print(f"\ntriton stop/start: {dict(kinds)}; recovered {recovery_s:.2f}s after restart")
    assert recovery_s < 5


def test_redis_killed_and_restarted_under_load(triton_server: TritonServer, tmp_path: Path) -> None:
    with RedisServer() as own_redis:
        kv = redis.Redis.from_url(own_redis.url)
        ids = [f"card-r{n}" for n in range(20)]
        for entity in ids:
            put_features(kv, entity, TYPICAL)
        kv.save()  # the restarted server reloads its dump: features survive the outage
        kv.close()
        with (
            GatewayProcess(
                spec_path=SPEC_PATH, redis_url=own_redis.url, triton_url=triton_server.grpc_url
            ) as gateway,
            Load(gateway, ids) as load,
        ):
            time.sleep(1.0)
            own_redis.kill()
            time.sleep(2.0)
            own_redis.start()
            up_at = time.monotonic()
            recovery_s = recovered_after(load, up_at)
    kinds = check_answers(load, reference_score(TYPICAL))
    assert kinds["503"] > 0, "the outage was felt"
    print(f"\nredis kill/restart: {dict(kinds)}; recovered {recovery_s:.2f}s after restart")
    assert recovery_s < 5


def test_slow_triton_answers_within_the_deadline_and_recovers(
    redis_server: RedisServer, triton_server: TritonServer, entities: list[str]
) -> None:
    with (
        gateway_behind_proxy(SPEC_PATH, redis_server.url, triton_server.grpc_url) as (
            gateway,
            proxy,
        ),
        Load(gateway, entities) as load,
    ):
        time.sleep(1.0)
        proxy.delay_s = 1.0  # far past the 300 ms deadline
        slow_at = time.monotonic()
        time.sleep(3.0)
        proxy.delay_s = 0.0
        fast_at = time.monotonic()
        recovery_s = recovered_after(load, fast_at)
    kinds = check_answers(load, reference_score(TYPICAL))
    during = [o for o in load.outcomes if slow_at + 1.5 < o.at < fast_at]
    # Once the breaker is open, answers come at once instead of after the whole deadline.
    fast = sorted(o.latency_s for o in during)
    assert fast
    assert fast[len(fast) // 2] < 0.1, f"median {fast[len(fast) // 2]:.3f}s"
    print(
        f"\nslow triton: {dict(kinds)}; median latency while slow "
        f"{fast[len(fast) // 2] * 1000:.1f} ms; recovered {recovery_s:.2f}s after it sped up"
    )
    assert recovery_s < 5
