"""Locust load test for the gateway's REST and gRPC APIs, with an SLO gate.

    # both users (REST and gRPC, equal user counts), against the local stack (make run)
    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 2m \
        --host http://127.0.0.1:8080 --csv out/run --html out/report.html
    # one transport: name its user class (Locust's class selection; --class-picker in the UI)
    locust -f loadtests/locustfile.py --headless ... RestUser
    locust -f loadtests/locustfile.py --headless ... --grpc-target 127.0.0.1:50051 GrpcUser

Request types (each its own row in the stats, CSV and HTML report):

* ``predict:hit``   one entity of the pre-warmed hot set, cache mode prefer → served from cache
* ``predict:miss``  one entity with ``cache: bypass`` or with a feature override → Triton
* ``predict:batch`` ``instances`` of ``--batch-size`` random entities (mixed hits and misses)
* ``features:push`` ``PUT /v1/features/card/{id}``: fresh values of a cold (not hot) entity
  with the current time as event time (REST only: the gRPC API has no push RPC)
* ``grpc:predict:hit`` / ``grpc:predict:miss`` / ``grpc:predict:batch``: the same calls over
  gRPC (``Predict`` / ``PredictBatch``), request type ``grpc``

The hot set (``--hot-entities`` ids of the data set) is scored once at test start, outside the
stats, so hits are hits from the first request. A push deletes the entity's cached
prediction, so pushes go only to ids outside the hot set and do not lower the hit ratio.
``--hit-ratio``, ``--batch-ratio`` and ``--push-ratio`` set the task weights (loadtests/mix.py).
Both users send the API key (``--api-key``, env ``GATEWAY_API_KEY``) as ``authorization:
Bearer``: a header on REST, call metadata on gRPC. Load shapes: loadtests/shapes.py.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc_client
import mix
import requests
import slo
from locust import FastHttpUser, TaskSet, User, constant_throughput, events
from locust.runners import WorkerRunner

PREDICT_PATH = f"/v1/models/{mix.MODEL}/predict"
PUSH_PATH = f"/v1/features/{mix.NAMESPACE}"
DEFAULT_ENTITIES_FILE = Path(__file__).resolve().parents[1] / "data/demo/card_features.csv"
WARM_BATCH = 256  # the model's max_batch_size in config/models.yaml

BodyCheck = Callable[[dict[str, Any]], bool]
"""True when a 200 answer's JSON body is what the request should have got."""


@events.init_command_line_parser.add_listener
def _(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("gateway mix (loadtests/locustfile.py)")
    group.add_argument(
        "--hit-ratio",
        type=float,
        default=0.8,
        help="share of single-entity predictions that are cache hits (default: %(default)s)",
    )
    group.add_argument(
        "--batch-ratio",
        type=float,
        default=0.1,
        help="share of all requests that are batches (default: %(default)s)",
    )
    group.add_argument(
        "--push-ratio",
        type=float,
        default=0.05,
        help="share of REST requests that are feature pushes, 0 = none (default: %(default)s)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="entities per batch request (default: %(default)s)",
    )
    group.add_argument(
        "--hot-entities",
        type=int,
        default=1000,
        help="entities pre-warmed at test start and used for hits (default: %(default)s)",
    )
    group.add_argument(
        "--entities-file",
        default=str(DEFAULT_ENTITIES_FILE),
        help="CSV whose first column holds the loaded entity ids (default: the demo data set)",
    )
    group.add_argument(
        "--user-rate",
        type=float,
        default=10.0,
        help="requests per second per user, 0 = as fast as possible (default: %(default)s)",
    )
    group.add_argument(
        "--grpc-target",
        default="",
        help="GrpcUser's host:port (default: --host's host name, port 50051)",
    )
    group.add_argument(
        "--grpc-deadline-ms",
        type=float,
        default=1000.0,
        help="deadline of every gRPC call; the gateway's budget for it (default: %(default)s)",
    )
    group.add_argument(
        "--grpc-tls",
        action="store_true",
        default=False,
        help="GrpcUser connects with TLS (system roots) instead of plaintext",
    )
    group.add_argument(
        "--shape",
        choices=("ramp", "step"),
        default="ramp",
        help="load shape, used only with -f loadtests/locustfile.py,loadtests/shapes.py",
    )
    group.add_argument(
        "--step-users", type=int, default=10, help="users added per step (--shape step)"
    )
    group.add_argument(
        "--step-time", default="30s", help="duration of each step, e.g. 30s (--shape step)"
    )
    parser.add_argument(  # on the parser, not the group: only it takes is_secret
        "--api-key",
        default=os.environ.get("GATEWAY_API_KEY", ""),
        is_secret=True,  # masked in the web UI
        help="gateway API key, sent as 'authorization: Bearer' (default: env GATEWAY_API_KEY)",
    )
    group.add_argument(
        "--skip-warmup",
        action="store_true",
        default=False,
        help="do not pre-warm the hot set (it is already cached)",
    )


class Mix:
    """What every user of the process shares, set once from the options in ``init``."""

    pool: mix.EntityPool = mix.entity_pool([f"card-{i:06d}" for i in range(1, 10_001)], 1000)
    batch_size = 8
    headers: dict[str, str] = {}
    """The API key header, when one is given."""
    grpc_metadata: tuple[tuple[str, str], ...] = ()
    """The same key as gRPC call metadata."""
    grpc_target = f"127.0.0.1:{mix.GRPC_PORT}"
    grpc_deadline_s = 1.0
    grpc_tls = False


def weighted(
    weights: Mapping[str, int], by_name: Mapping[str, Callable[..., None]]
) -> list[TaskSet | Callable[..., Any]]:
    """Locust's task list: each task repeated by its weight (it picks uniformly from it)."""
    return [by_name[name] for name, weight in weights.items() for _ in range(weight)]


@events.init.add_listener
def _(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    path = Path(options.entities_file)
    ids = mix.read_entity_ids(path) if path.exists() else list(Mix.pool.ids)
    Mix.pool = mix.entity_pool(ids, options.hot_entities)
    Mix.batch_size = options.batch_size
    Mix.headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    Mix.grpc_metadata = grpc_client.bearer_metadata(options.api_key)
    Mix.grpc_target = options.grpc_target or mix.default_grpc_target(environment.host)
    Mix.grpc_deadline_s = options.grpc_deadline_ms / 1000
    Mix.grpc_tls = options.grpc_tls
    try:
        RestUser.weights = mix.task_weights(
            options.hit_ratio, options.batch_ratio, options.push_ratio
        )
    except ValueError as exc:  # before any load, like a bad SLO file
        print(f"gateway mix: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    RestUser.tasks = weighted(RestUser.weights, RestUser.by_name)
    GrpcUser.weights = mix.grpc_weights(options.hit_ratio, options.batch_ratio)
    GrpcUser.tasks = weighted(GrpcUser.weights, GrpcUser.by_name)


@events.test_start.add_listener
def _(environment: Any, **_kwargs: Any) -> None:
    """Score the hot set once (outside the stats) so hits are hits from the start."""
    options = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner) or options is None or options.skip_warmup:
        return
    hot = list(Mix.pool.hot)
    if RestUser in environment.user_classes:
        url = (environment.host or "").rstrip("/") + PREDICT_PATH
        with requests.Session() as session:
            session.headers.update(Mix.headers)
            for start in range(0, len(hot), WARM_BATCH):
                body = {"instances": [{"entity_id": e} for e in hot[start : start + WARM_BATCH]]}
                session.post(url, json=body, timeout=30).raise_for_status()
    else:  # gRPC only: --host may not even be set
        grpc_client.warm_up(
            Mix.grpc_target, hot, metadata=Mix.grpc_metadata, tls=Mix.grpc_tls, chunk=WARM_BATCH
        )


def request_names(environment: Any) -> set[str]:
    """What the selected user classes send: the SLO gate requires no other listed type."""
    names: set[str] = set()
    for user_class in environment.user_classes:
        names |= mix.sent_names(getattr(user_class, "weights", {}))
    return names


slo.register(events, sent=request_names)


def paced(user: User) -> float:
    """``--user-rate``: pace each user's loop to that many tasks per second (0: no pause)."""
    options = user.environment.parsed_options
    rate = options.user_rate if options is not None else 0.0
    return constant_throughput(rate)(user) if rate > 0 else 0.0


class RestUser(FastHttpUser):
    """One client app calling the REST API: predictions and feature pushes."""

    wait_time = paced
    weights: dict[str, int] = mix.task_weights(0.8, 0.1, 0.05)
    """Request name → task weight; set from the options in ``init``."""

    def on_start(self) -> None:
        self.rng = random.Random()  # per user: seeded after --processes forks

    def _send(
        self, method: str, path: str, name: str, body: dict[str, Any], check: BodyCheck
    ) -> None:
        with self.client.request(
            method, path, json=body, name=name, headers=Mix.headers, catch_response=True
        ) as response:
            text = (response.text or "")[:200]
            if response.status_code != 200:
                # status 0: connection error, already carried by response.error
                response.failure(response.error or f"HTTP {response.status_code}: {text}")
                return
            try:
                payload = response.json()
            except ValueError:
                response.failure(f"not JSON: {text}")
                return
            if not isinstance(payload, dict) or not check(payload):
                response.failure(f"unexpected body: {text}")

    def _predict(self, name: str, call: mix.Call) -> None:
        body: dict[str, Any] = {"entity_id": call.entity_ids[0]}
        if call.bypass:
            body["cache"] = "bypass"
        if call.features:
            body["features"] = dict(call.features)
        self._send("POST", PREDICT_PATH, name, body, lambda p: "scores" in p)

    def predict_hit(self) -> None:
        self._predict(mix.HIT, mix.draw_hit(Mix.pool, self.rng))

    def predict_miss(self) -> None:
        self._predict(mix.MISS, mix.draw_miss(Mix.pool, self.rng))

    def predict_batch(self) -> None:
        call = mix.draw_batch(Mix.pool, self.rng, Mix.batch_size)
        body = {"instances": [{"entity_id": e} for e in call.entity_ids]}
        expected = len(call.entity_ids)

        def check(payload: dict[str, Any]) -> bool:
            return len(payload.get("predictions", ())) == expected

        self._send("POST", PREDICT_PATH, mix.BATCH, body, check)

    def push_features(self) -> None:
        entity, body = mix.draw_push(Mix.pool, self.rng, time.time())
        # applied=false (an update of the same id with a later event time got there first) is
        # a correct answer, not a failure
        self._send("PUT", f"{PUSH_PATH}/{entity}", mix.PUSH, body, lambda p: "applied" in p)

    by_name = {
        mix.HIT: predict_hit,
        mix.MISS: predict_miss,
        mix.BATCH: predict_batch,
        mix.PUSH: push_features,
    }
    tasks = weighted(weights, by_name)


class GrpcUser(User):
    """One client app calling ``gateway.v1.Gateway`` over its own channel, with a deadline."""

    wait_time = paced
    weights: dict[str, int] = mix.grpc_weights(0.8, 0.1)
    """Request name → task weight; set from the options in ``init``."""

    def on_start(self) -> None:
        self.rng = random.Random()
        self.grpc = grpc_client.GatewayGrpc(
            self.environment.events,
            Mix.grpc_target,
            metadata=Mix.grpc_metadata,
            deadline_s=Mix.grpc_deadline_s,
            tls=Mix.grpc_tls,
        )

    def on_stop(self) -> None:
        self.grpc.close()

    def _predict(self, name: str, call: mix.Call) -> None:
        request = grpc_client.predict_request(call)
        self.grpc.call(name, self.grpc.stub.Predict, request, grpc_client.check_predict)

    def predict_hit(self) -> None:
        self._predict(mix.GRPC_PREFIX + mix.HIT, mix.draw_hit(Mix.pool, self.rng))

    def predict_miss(self) -> None:
        self._predict(mix.GRPC_PREFIX + mix.MISS, mix.draw_miss(Mix.pool, self.rng))

    def predict_batch(self) -> None:
        call = mix.draw_batch(Mix.pool, self.rng, Mix.batch_size)
        self.grpc.call(
            mix.GRPC_PREFIX + mix.BATCH,
            self.grpc.stub.PredictBatch,
            grpc_client.batch_request(call),
            grpc_client.check_batch(len(call.entity_ids)),
        )

    by_name = {
        mix.GRPC_PREFIX + mix.HIT: predict_hit,
        mix.GRPC_PREFIX + mix.MISS: predict_miss,
        mix.GRPC_PREFIX + mix.BATCH: predict_batch,
    }
    tasks = weighted(weights, by_name)
