"""The event-driven lane against a real redis-server and tritonserver.

Workers run as real ``python -m gateway stream-worker`` processes (the CLI, settings from the
environment, signal handling), so ``kill -9`` is a real kill. Each worker group uses its own
streams; a short claim idle time makes reclaiming fast enough for a test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis
from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput

from devstack.processes import terminate
from devstack.redis_server import RedisServer
from gateway.config import RedisSettings
from gateway.store import open_redis
from gateway.stream.events import encode_event
from gateway.stream.log import EventLog, Record
from gateway.stream.produce import append_events
from tests.integration.conftest import SPEC_PATH, wait_until
from tests.integration.helpers import (
    TYPICAL,
    cached,
    fraud_spec,
    put_cached,
    put_features,
    reference_score,
)
from triton_launcher.launcher import TritonServer
from triton_launcher.ports import free_port

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Lane:
    """Stream names of one isolated lane (input, group, output, dead letters)."""

    stream: str
    group: str
    output: str
    dead: str

    @classmethod
    def new(cls) -> Lane:
        tag = uuid.uuid4().hex[:8]
        return cls(f"t:{tag}:events", f"g{tag}", f"t:{tag}:predictions", f"t:{tag}:dead")


class WorkerProcess:
    """One ``python -m gateway stream-worker`` subprocess."""

    def __init__(
        self,
        redis_url: str,
        triton_url: str,
        lane: Lane,
        consumer: str,
        **settings: object,
    ) -> None:
        self.consumer = consumer
        self.metrics_port = free_port()
        env = {
            **os.environ,
            "GATEWAY_SPEC_PATH": str(SPEC_PATH),
            "GATEWAY_REDIS__URL": redis_url,
            "GATEWAY_TRITON__URL": triton_url,
            "GATEWAY_STREAM__STREAM": lane.stream,
            "GATEWAY_STREAM__GROUP": lane.group,
            "GATEWAY_STREAM__OUTPUT_STREAM": lane.output,
            "GATEWAY_STREAM__DEAD_LETTER_STREAM": lane.dead,
            "GATEWAY_STREAM__CONSUMER": consumer,
            "GATEWAY_STREAM__CLAIM_IDLE_MS": "1000",
            "GATEWAY_STREAM__CLAIM_INTERVAL_S": "0.2",
            "GATEWAY_STREAM__LAG_INTERVAL_S": "0.2",
            "GATEWAY_STREAM__BLOCK_MS": "200",
            "GATEWAY_STREAM__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "GATEWAY_STREAM__METRICS_PORT": str(self.metrics_port),
        }
        env.update({f"GATEWAY_STREAM__{k.upper()}": str(v) for k, v in settings.items()})
        # The worker keeps its own registry; a multiprocess directory another test left in
        # the environment (perhaps deleted since) must not leak into it.
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._env = env
        self._log = Path(tempfile.mkstemp(prefix=f"gw-stream-{consumer}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> WorkerProcess:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "stream-worker"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "ready" in self._log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log}")

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; the exit code (None if it had already been reaped)."""
        process, self.process = self.process, None
        if process is None:
            return None
        return terminate(process, timeout_s)

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lane() -> Lane:
    return Lane.new()


@pytest.fixture(scope="module")
def workers(
    redis_server: RedisServer, triton_server: TritonServer, lane: Lane
) -> Iterator[list[WorkerProcess]]:
    """Two workers sharing one consumer group."""
    pair = [WorkerProcess(redis_server.url, triton_server.grpc_url, lane, f"w{i}") for i in (1, 2)]
    try:
        for worker in pair:
            worker.start()
        yield pair
    finally:
        codes = [worker.stop() for worker in pair]
    assert codes == [0, 0], "a worker did not drain and exit 0 on SIGTERM"


@pytest.fixture
def produce(redis_server: RedisServer) -> Callable[..., list[str]]:
    def _produce(stream: str, events: list[Mapping[str, str | bytes]]) -> list[str]:
        async def go() -> list[str]:
            async with open_redis(RedisSettings(url=redis_server.url)) as client:
                return await append_events(client, stream, events, maxlen=1_000_000)

        return asyncio.run(go())

    return _produce


def outputs(kv: redis.Redis, stream: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in kv.xrange(stream)  # type: ignore[union-attr]
    ]


def wait_for_outputs(kv: redis.Redis, stream: str, count: int, timeout_s: float = 20.0):
    wait_until(lambda: kv.xlen(stream) >= count, timeout_s=timeout_s)
    return outputs(kv, stream)


def group_state(kv: redis.Redis, lane: Lane) -> dict[str, object]:
    (group,) = [
        g
        for g in kv.xinfo_groups(lane.stream)  # type: ignore[union-attr]
        if g["name"].decode() == lane.group
    ]
    return group


def triton_scores(triton: TritonServer, rows: np.ndarray) -> np.ndarray:
    """Triton's own answer for the rows (direct gRPC, no gateway code involved)."""
    client = InferenceServerClient(triton.grpc_url)
    try:
        parts = []
        for start in range(0, len(rows), 1024):
            chunk = rows[start : start + 1024]
            tensor = InferInput("features", list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            result = client.infer(
                "fraud_scorer", [tensor], outputs=[InferRequestedOutput("fraud_probability")]
            )
            parts.append(result.as_numpy("fraud_probability").reshape(-1))
        return np.concatenate(parts)
    finally:
        client.close()


def full_row(i: int) -> dict[str, float]:
    values = dict(TYPICAL)
    values["amount"] = round(1.0 + i * 0.731, 3)
    values["hour_of_day"] = i % 24
    values["is_online"] = i % 3 == 0
    values["distance_from_home_km"] = float(i % 500)
    return values


# -- tests ------------------------------------------------------------------------------------


def test_throughput_run_scores_every_event_once_like_triton(
    workers, lane: Lane, kv: redis.Redis, produce, triton_server: TritonServer
) -> None:
    n = 3000
    events = [
        encode_event("fraud_scorer", f"tp-{i}", features=full_row(i), event_id=f"tp-{i}")
        for i in range(n)
    ]
    started = time.perf_counter()
    produce(lane.stream, events)
    records = wait_for_outputs(kv, lane.output, n)
    elapsed = time.perf_counter() - started
    print(f"\n{n} events scored by 2 workers in {elapsed:.2f}s ({n / elapsed:,.0f} events/s)")

    by_id = {r["event_id"]: r for r in records if r["event_id"].startswith("tp-")}
    assert len(by_id) == n == len([r for r in records if r["event_id"].startswith("tp-")])
    spec = fraud_spec()
    rows = np.array(
        [[float(full_row(i)[f.name]) for f in spec.features] for i in range(n)], dtype=np.float32
    )
    expected = triton_scores(triton_server, rows)
    got = np.array(
        [orjson.loads(by_id[f"tp-{i}"]["scores"])["fraud_probability"] for i in range(n)]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    sample = by_id["tp-7"]
    assert sample["model"] == "fraud_scorer"
    assert sample["version"] == "1"
    assert sample["entity_id"] == "tp-7"
    assert sample["cached"] == "1"
    assert float(sample["latency_ms"]) >= 0
    # The online path serves the same prediction from the cache.
    entry = cached(kv, "tp-7")
    assert entry is not None
    assert entry["s"] == [orjson.loads(sample["scores"])["fraud_probability"]]
    assert entry["f"] == float(sample["features_at"])
    assert group_state(kv, lane)["pending"] == 0
    assert sum(w.metric("gateway_stream_batch_size_count") for w in workers) > 1


def test_a_retried_append_with_the_same_event_id_is_published_once(
    workers, lane: Lane, kv: redis.Redis, produce
) -> None:
    event = encode_event("fraud_scorer", "dup-1", features={"amount": 12.5}, event_id="dup-evt")
    produce(lane.stream, [event, event, event])
    wait_until(lambda: group_state(kv, lane)["pending"] == 0 and group_state(kv, lane)["lag"] == 0)
    time.sleep(0.2)
    published = [r for r in outputs(kv, lane.output) if r["event_id"] == "dup-evt"]
    assert len(published) == 1
    assert sum(w.metric('gateway_stream_events_total{outcome="duplicate"}') for w in workers) >= 2


def test_poison_goes_to_the_dead_letter_stream_and_good_events_behind_it_are_scored(
    workers, lane: Lane, kv: redis.Redis, produce
) -> None:
    good = [
        encode_event("fraud_scorer", f"ok-{i}", features={"amount": 10.0 + i}, event_id=f"ok-{i}")
        for i in range(20)
    ]
    bad: list[Mapping[str, str | bytes]] = [
        {"model": "fraud_scorer", "entity_id": "p-1", "features": "{not json", "event_id": "p1"},
        {"model": "no_such_model", "entity_id": "p-2", "event_id": "p2"},
        {
            "model": "fraud_scorer",
            "entity_id": "p-3",
            "features": '{"amount": -1}',
            "event_id": "p3",
        },
        # No amount stored, none in the event, and amount has no default.
        {"model": "fraud_scorer", "entity_id": f"p-4-{uuid.uuid4().hex}", "event_id": "p4"},
    ]
    produce(lane.stream, [good[0], *bad, *good[1:]])

    # A "crash pill": an entry some worker took and never finished, already delivered
    # max_attempts times. It is appended and taken by a consumer that then vanishes, in one
    # transaction so no live worker reads it first.
    pipe = kv.pipeline(transaction=True)
    pipe.xadd(lane.stream, encode_event("fraud_scorer", "pill", event_id="pill"))
    pipe.xreadgroup(lane.group, "ghost", {lane.stream: ">"}, count=1)
    pill_id, reply = pipe.execute()
    assert reply[0][1][0][0] == pill_id
    kv.xclaim(lane.stream, lane.group, "ghost", 0, [pill_id], retrycount=MAX_ATTEMPTS, idle=60_000)

    wait_until(
        lambda: {f"ok-{i}" for i in range(20)} <= {r["event_id"] for r in outputs(kv, lane.output)},
        timeout_s=10,
    )
    dead = {}
    wait_until(lambda: kv.xlen(lane.dead) >= 5, timeout_s=10)
    for record in outputs(kv, lane.dead):
        dead[record["event_id"]] = record
    assert set(dead) == {"p1", "p2", "p3", "p4", "pill"}
    assert dead["p1"]["reason"] == "features: features is not valid JSON"
    assert dead["p2"]["reason"] == "model: unknown model 'no_such_model'"
    assert dead["p3"]["reason"] == "features.amount: amount=-1 is outside [0, 1000000]"
    assert dead["p4"]["reason"].startswith("features.amount: feature 'amount' has no value")
    assert {dead[k]["kind"] for k in ("p1", "p2", "p3", "p4")} == {"invalid"}
    assert dead["pill"]["kind"] == "attempts"
    assert dead["pill"]["attempts"] == str(MAX_ATTEMPTS + 1)
    assert f"after {MAX_ATTEMPTS} deliveries" in dead["pill"]["reason"]
    assert orjson.loads(dead["p2"]["payload"])["model"] == "no_such_model"
    scored = {r["event_id"] for r in outputs(kv, lane.output)}
    assert not scored & set(dead), "a dead-lettered event was also published"
    wait_until(lambda: group_state(kv, lane)["pending"] == 0)
    assert sum(w.metric("gateway_stream_dead_letters_total") for w in workers) == 5


def test_features_carried_by_events_are_written_and_retire_the_cached_prediction(
    workers, lane: Lane, kv: redis.Redis, produce
) -> None:
    entity = f"feat-{uuid.uuid4().hex[:8]}"
    old = time.time() - 3600
    put_features(kv, entity, TYPICAL, written_at=old)
    put_cached(kv, entity, 0.5, scored_at=time.time(), features_at=old)

    event_time = time.time() - 1
    change = {"amount": 5000.0, "foreign_transaction": True}
    produce(
        lane.stream,
        [
            encode_event(
                "fraud_scorer", entity, features=change, event_time=event_time, event_id=entity
            )
        ],
    )
    (record,) = _await_event(kv, lane, entity)
    stored = kv.hgetall(f"gw:f:card:{entity}")
    assert float(stored[b"amount"]) == 5000.0
    assert float(stored[b"foreign_transaction"]) == 1.0
    assert float(stored[b"_ts"]) == event_time
    score = orjson.loads(record["scores"])["fraud_probability"]
    assert score == pytest.approx(reference_score({**TYPICAL, **change}), rel=1e-5)
    entry = cached(kv, entity)
    assert entry is not None
    assert entry["s"] == [score] != [0.5]
    assert entry["f"] == event_time
    assert record["cached"] == "1"

    # A late event (older than the stored features) is scored and published, but neither
    # rolls the features back nor replaces the entity's cached prediction.
    late = encode_event(
        "fraud_scorer",
        entity,
        features={"amount": 1.0},
        event_time=old + 1,
        event_id=entity + "-late",
    )
    produce(lane.stream, [late])
    (late_record,) = _await_event(kv, lane, entity + "-late")
    assert late_record["cached"] == "0"
    assert float(kv.hget(f"gw:f:card:{entity}", "amount")) == 5000.0  # type: ignore[arg-type]
    assert cached(kv, entity) == entry
    late_score = orjson.loads(late_record["scores"])["fraud_probability"]
    expected = reference_score({**TYPICAL, **change, "amount": 1.0})
    assert late_score == pytest.approx(expected, rel=1e-5)


def _await_event(kv: redis.Redis, lane: Lane, event_id: str) -> list[dict[str, str]]:
    wait_until(lambda: any(r["event_id"] == event_id for r in outputs(kv, lane.output)))
    return [r for r in outputs(kv, lane.output) if r["event_id"] == event_id]


def test_lag_drains_to_zero_after_a_burst(workers, lane: Lane, kv: redis.Redis, produce) -> None:
    burst = [
        encode_event("fraud_scorer", f"burst-{i % 500}", features={"amount": float(i % 997)})
        for i in range(5000)
    ]
    before = kv.xlen(lane.output)
    produce(lane.stream, burst)
    # A backlog right after the burst: unread (lag) or read into the workers but not yet
    # acknowledged (pending). The workers may well have read all 5000 by now.
    state = group_state(kv, lane)
    assert int(state["lag"] or 0) + int(state["pending"]) > 0, state  # type: ignore[call-overload]
    wait_until(
        lambda: group_state(kv, lane)["lag"] == 0 and group_state(kv, lane)["pending"] == 0,
        timeout_s=20,
    )
    assert kv.xlen(lane.output) == before + 5000
    # The workers' own gauges follow (refreshed every lag_interval_s).
    wait_until(lambda: all(w.metric("gateway_stream_consumer_lag") == 0 for w in workers))
    assert all(w.metric("gateway_stream_in_flight_events") == 0 for w in workers)
    assert (
        sum(w.metric("gateway_stream_event_to_prediction_seconds_count") for w in workers) >= 5000
    )


def test_kill_9_mid_batch_loses_nothing_and_publishes_each_event_once(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis, produce
) -> None:
    lane = Lane.new()
    # The victim holds a batch open for 30 s: everything it reads stays pending (read, not
    # acknowledged) until it is killed.
    victim = WorkerProcess(
        redis_server.url,
        triton_server.grpc_url,
        lane,
        "victim",
        batch_max_size=4096,
        max_in_flight=4096,
        batch_max_wait_ms=30_000,
    ).start()
    rescuer = WorkerProcess(redis_server.url, triton_server.grpc_url, lane, "rescuer")
    try:
        first = [
            encode_event("fraud_scorer", f"k-{i}", features={"amount": float(i)})
            for i in range(300)
        ]
        ids = produce(lane.stream, first)

        def victim_holds_all() -> bool:
            pending = kv.xpending(lane.stream, lane.group)
            return pending["pending"] == 300 and pending["consumers"] == [
                {"name": b"victim", "pending": 300}
            ]

        wait_until(victim_holds_all, timeout_s=10)
        assert kv.xlen(lane.output) == 0
        victim.kill()

        rescuer.start()
        second = [
            encode_event("fraud_scorer", f"k-{i}", features={"amount": float(i)})
            for i in range(300, 1000)
        ]
        ids += produce(lane.stream, second)
        records = wait_for_outputs(kv, lane.output, 1000, timeout_s=20)
        wait_until(lambda: kv.xpending(lane.stream, lane.group)["pending"] == 0)
        time.sleep(0.3)  # anything published late would show up now
        records = outputs(kv, lane.output)
        published = [r["event_id"] for r in records]
        assert len(published) == len(set(published)) == 1000, "an event was published twice"
        assert set(published) == set(ids), "an event was lost"
        assert rescuer.metric("gateway_stream_reclaimed_total") == 300
    finally:
        victim.stop()
        assert rescuer.stop() == 0


def test_sigterm_finishes_the_open_batch_acknowledges_and_exits_0(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis, produce
) -> None:
    lane = Lane.new()
    worker = WorkerProcess(
        redis_server.url,
        triton_server.grpc_url,
        lane,
        "graceful",
        batch_max_size=1024,
        batch_max_wait_ms=30_000,
    ).start()
    try:
        ids = produce(
            lane.stream,
            [encode_event("fraud_scorer", f"s-{i}", features={"amount": 1.0}) for i in range(50)],
        )
        wait_until(lambda: kv.xpending(lane.stream, lane.group)["pending"] == 50)
        assert kv.xlen(lane.output) == 0  # still collecting: the batch is open
        started = time.monotonic()
        assert worker.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        worker.stop()
    assert {r["event_id"] for r in outputs(kv, lane.output)} == set(ids)
    assert kv.xpending(lane.stream, lane.group)["pending"] == 0
    consumers = [c["name"] for c in kv.xinfo_consumers(lane.stream, lane.group)]
    assert b"graceful" not in consumers, "a drained worker leaves the group"


async def test_commit_publishes_an_entry_once_even_when_two_workers_finish_it(
    redis_server: RedisServer,
) -> None:
    """A slow worker and the one that reclaimed its entry both finish it: one output."""
    lane = Lane.new()
    async with open_redis(RedisSettings(url=redis_server.url)) as client:
        slow = EventLog(client, client, stream=lane.stream, group=lane.group, consumer="slow")
        fast = EventLog(client, client, stream=lane.stream, group=lane.group, consumer="fast")
        await slow.ensure_group()
        (entry_id,) = await append_events(
            client, lane.stream, [encode_event("fraud_scorer", "x")], maxlen=100
        )
        (entry,) = await slow.read(10, None)
        await asyncio.sleep(0.01)
        reclaimed = await fast.reclaim("0-0", min_idle_ms=1, count=10)
        assert [e.entry_id for e in reclaimed.entries] == [entry_id]
        assert reclaimed.entries[0].deliveries == 2
        record = Record(entry_id=entry_id, marker="", values=["x"])
        target = (lane.output, 100, ["event_id"], [record])
        first, _ = await fast.commit(output=target, dead_letters=None, marker_ttl_s=60)
        second, _ = await slow.commit(output=target, dead_letters=None, marker_ttl_s=60)
        assert (first.published, first.acknowledged) == (1, 1)
        assert (second.published, second.acknowledged) == (0, 0)
        assert await client.xlen(lane.output) == 1
        assert entry.entry_id == entry_id


def test_a_restarted_worker_resumes_its_own_pending_entries_at_once(
    redis_server: RedisServer, triton_server: TritonServer, kv: redis.Redis, produce
) -> None:
    """Entries delivered to a consumer name but never finished (a lost read reply, a container
    restarted in the same pod) are taken up at start, not after claim_idle_ms."""
    lane = Lane.new()
    kv.xgroup_create(lane.stream, lane.group, id="0", mkstream=True)
    ids = produce(
        lane.stream,
        [encode_event("fraud_scorer", f"r-{i}", features={"amount": 2.0}) for i in range(40)],
    )
    kv.xreadgroup(lane.group, "same-name", {lane.stream: ">"}, count=100)
    assert kv.xpending(lane.stream, lane.group)["pending"] == 40
    worker = WorkerProcess(
        redis_server.url, triton_server.grpc_url, lane, "same-name", claim_idle_ms=600_000
    ).start()
    try:
        records = wait_for_outputs(kv, lane.output, 40, timeout_s=10)
        assert sorted(r["event_id"] for r in records) == sorted(ids)
        wait_until(lambda: kv.xpending(lane.stream, lane.group)["pending"] == 0)
    finally:
        assert worker.stop() == 0


class _RejectingScorer:
    """Triton stand-in that rejects any batch holding entity "reject-me" (InferenceFailed),
    the failure a real Triton gives for rows it cannot run."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def score(self, events):
        from gateway.errors import InferenceFailed
        from gateway.stream.worker import Scored

        ids = [e.entity_id for e in events]
        self.calls.append(ids)
        if "reject-me" in ids:
            raise InferenceFailed("inference server rejected the request")
        return [Scored(e, "1", (0.5,), time.time(), None, False) for e in events], []


async def test_a_failing_entry_is_isolated_retried_and_dead_lettered_after_max_attempts(
    redis_server: RedisServer,
) -> None:
    from gateway.stream.metrics import StreamMetrics
    from gateway.stream.settings import StreamSettings
    from gateway.stream.worker import StreamWorker

    lane = Lane.new()
    settings = StreamSettings(
        stream=lane.stream,
        group=lane.group,
        output_stream=lane.output,
        dead_letter_stream=lane.dead,
        consumer="isolating",
        batch_max_wait_ms=50,
        claim_idle_ms=100,
        claim_interval_s=0.05,
        max_attempts=2,
        block_ms=50,
    )
    scorer = _RejectingScorer()
    async with open_redis(RedisSettings(url=redis_server.url)) as client:
        event_log = EventLog(
            client, client, stream=lane.stream, group=lane.group, consumer="isolating"
        )
        specs = {"fraud_scorer": fraud_spec()}
        worker = StreamWorker(settings, event_log, scorer, specs, StreamMetrics())  # type: ignore[arg-type]
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.1)
            entity_ids = ["ok-a", "reject-me", "ok-b"]
            await append_events(
                client,
                lane.stream,
                [encode_event("fraud_scorer", e, features={"amount": 1.0}) for e in entity_ids],
                maxlen=100,
            )
            for _ in range(200):  # up to 10 s
                if await client.xlen(lane.dead):
                    break
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await running
        published = [f[b"entity_id"] for _, f in await client.xrange(lane.output)]
        (dead,) = [f for _, f in await client.xrange(lane.dead)]
        pending = await client.xpending(lane.stream, lane.group)
    assert sorted(published) == [b"ok-a", b"ok-b"], "the good entries of the failed batch"
    assert dead[b"kind"] == b"attempts"
    assert orjson.loads(dead[b"payload"])["entity_id"] == "reject-me"
    assert pending["pending"] == 0
    # First the batch of three, then each entry alone; the rejected one once more on
    # redelivery, then it is given up without being scored again.
    assert scorer.calls[0] == entity_ids
    assert scorer.calls.count(["reject-me"]) == 2
