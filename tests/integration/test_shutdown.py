"""Graceful shutdown of a real gateway process: SIGTERM while REST and gRPC load is running.

Asserted: requests in flight at SIGTERM complete with the right answer (three are held in
flight on purpose, proven admitted through their Redis token bucket); the HTTP listener
refuses new connections right away; every answer the load generators get is a correct
prediction or a refusal of a request that was never started (never a 5xx, a partial body or a
hang past the deadline); the process exits 0 within its grace period.

"Never started" on REST: connection refused, or a keep-alive connection the drain closed
while idle (uvicorn closes only connections with no request in progress; a request written
into one in that instant was never read: ``Server disconnected without sending a response``
or a reset). On gRPC: UNAVAILABLE once the server stops accepting, or CANCELLED for a call
that reached grpc's accept loop in the instant ``server.stop()`` began (grpc-python drops
those unhandled); in-flight calls are drained, not cancelled, since the process exits well
inside the grace period. Each load request uses its own entity, so no request waits on
another's Triton call.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import httpx
import orjson
import pytest
import redis

from devstack.gateway_process import GatewayProcess
from devstack.redis_server import RedisServer
from gateway.keys import mint, write_keys_file
from gateway.ratelimit import BUCKET_PREFIX
from gateway.v1._generated import gateway_pb2 as pb
from gateway.v1._generated import gateway_pb2_grpc as pb_grpc
from tests.integration.conftest import SPEC_PATH, wait_until
from tests.integration.held_request import HeldRequest
from tests.integration.helpers import TYPICAL, reference_score
from triton_launcher.launcher import TritonServer

pytestmark = pytest.mark.integration
PREDICT = "/v1/models/fraud_scorer/predict"
BODY = {"entity_id": "card-drain", "features": TYPICAL, "cache": "bypass"}
EXPECTED = reference_score(TYPICAL)
GRACE_S = 5
DEADLINE_S = 5.0


class Load:
    """Client threads calling until the gateway is gone; each outcome is classified."""

    def __init__(self, gateway: GatewayProcess, rest: int, rpc: int) -> None:
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._gateway = gateway
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._rest) for _ in range(rest)]
        self._threads += [threading.Thread(target=self._rpc) for _ in range(rpc)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_S + 5)
        assert not any(t.is_alive() for t in self._threads), "a client hung"

    def _record(self, outcome: str, detail: str = "") -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if outcome == "unexpected":
                self.unexpected.append(detail)

    def _rest(self) -> None:
        headers = self._gateway.headers
        with httpx.Client(base_url=self._gateway.url, headers=headers, timeout=DEADLINE_S) as c:
            refused = 0
            while not self._stop.is_set() and refused < 3:
                try:
                    response = c.post(PREDICT, json=body())
                except httpx.HTTPError as e:
                    if not never_started(e):  # a timeout, or an answer cut off
                        self._record("unexpected", f"REST {type(e).__name__}: {e}")
                        return
                    self._record("rest:refused")
                    refused += 1
                    time.sleep(0.01)
                    continue
                score = None
                if response.status_code == 200:
                    score = orjson.loads(response.content)["scores"]["fraud_probability"]
                if score is not None and abs(score - EXPECTED) < 1e-6:
                    self._record("rest:ok")
                else:
                    self._record("unexpected", f"REST {response.status_code}: {response.text}")

    def _rpc(self) -> None:
        metadata = self._gateway.grpc_metadata
        with grpc.insecure_channel(self._gateway.grpc_target) as channel:
            stub = pb_grpc.GatewayStub(channel)  # type: ignore[no-untyped-call]
            refused = 0
            while not self._stop.is_set() and refused < 3:
                request = pb.PredictRequest(
                    model="fraud_scorer",
                    entity_id=body()["entity_id"],
                    features=TYPICAL,
                    cache=pb.CACHE_MODE_BYPASS,
                )
                try:
                    reply = stub.Predict(request, metadata=metadata, timeout=DEADLINE_S)
                except grpc.RpcError as e:
                    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                        self._record(f"grpc:{e.code().name.lower()}")
                        refused += 1
                        time.sleep(0.01)
                    else:
                        self._record("unexpected", f"gRPC {e.code()}: {e.details()}")
                        return
                    continue
                if abs(reply.prediction.scores["fraud_probability"] - EXPECTED) < 1e-6:
                    self._record("grpc:ok")
                else:
                    self._record("unexpected", f"gRPC wrong score {reply}")


def body() -> dict[str, object]:
    return {**BODY, "entity_id": f"card-d{uuid.uuid4().hex[:12]}"}


def never_started(error: httpx.HTTPError) -> bool:
    if isinstance(error, httpx.ConnectError):
        return True
    if isinstance(error, httpx.RemoteProtocolError):
        return "without sending a response" in str(error)
    return isinstance(error, httpx.ReadError) and "reset by peer" in str(error)


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_during_load_drains_in_flight_requests_and_exits_0(
    tmp_path: Path, redis_server: RedisServer, triton_server: TritonServer
) -> None:
    load_key, load_entry = mint("load", ["*"])
    held_client = f"held-{uuid.uuid4().hex[:8]}"
    held_key, held_entry = mint(held_client, ["*"], rate_per_s=0.001, burst=3)
    write_keys_file(tmp_path / "keys.yaml", [load_entry, held_entry])
    gateway = GatewayProcess(
        spec_path=SPEC_PATH,
        redis_url=redis_server.url,
        triton_url=triton_server.grpc_url,
        keys_file=tmp_path / "keys.yaml",
        api_key=load_key,
        env={"GATEWAY_SHUTDOWN_GRACE_S": str(GRACE_S), "GATEWAY_GRPC_GRACE_S": str(GRACE_S)},
    )
    kv = redis.Redis.from_url(redis_server.url)
    with gateway:
        # A client that sends its body slowly gives itself a budget to match.
        slow = {"X-API-Key": held_key, "X-Request-Timeout-Ms": "30000"}
        held = [HeldRequest(gateway.port, PREDICT, BODY, slow) for _ in range(3)]
        # Each held request took a token in the guard: all three are in flight in the app.
        wait_until(lambda: float(kv.hget(BUCKET_PREFIX + held_client, "tokens") or 3) < 0.5)
        # And one the predict fast path takes: its body is not in yet, so nothing has run.
        loader = {"X-API-Key": load_key, "X-Request-Timeout-Ms": "30000"}
        held.append(HeldRequest(gateway.port, PREDICT, BODY, loader, admitted_at_headers=False))
        with Load(gateway, rest=4, rpc=4) as load:
            wait_until(lambda: load.outcomes["rest:ok"] > 20 and load.outcomes["grpc:ok"] > 20)
            assert gateway.pid is not None
            sigterm_at = time.monotonic()
            os.kill(gateway.pid, signal.SIGTERM)
            wait_until(lambda: refuses_connections(gateway.port), timeout_s=2)
            refused_after_s = time.monotonic() - sigterm_at
            answers = [h.finish() for h in held]
            exit_code = gateway.wait(timeout_s=2 * GRACE_S + 5)
            drained_after_s = time.monotonic() - sigterm_at
    kv.close()

    print(
        f"\nSIGTERM: listener closed after {refused_after_s * 1000:.0f} ms, "
        f"exit {exit_code} after {drained_after_s:.2f} s; load outcomes {dict(load.outcomes)}"
    )
    assert load.unexpected == [], load.unexpected
    for status, headers, body in answers:
        assert status == 200
        assert body["scores"]["fraud_probability"] == pytest.approx(EXPECTED, abs=1e-6)
        assert headers["connection"] == "close"
    assert exit_code == 0
    assert drained_after_s < GRACE_S  # so no in-flight call was cut off by a grace timeout
    assert load.outcomes["grpc:cancelled"] <= 4  # at most one per client, at the stop instant
    assert load.outcomes["rest:ok"] > 20
    assert load.outcomes["grpc:ok"] > 20
